"""What the order actors do: send, cancel and reconcile one order.

Invariants kept here (DESIGN.md):
* never sent twice: an order is claimed NEW -> SUBMITTING before the POST; a redelivered
  message finds it SUBMITTING and reconciles instead of posting again; an ambiguous
  outcome moves it to UNKNOWN and only evidence settles it (a query here, then the
  listener's reconciler, which alone may conclude the exchange never got it);
* never sent stale: an order older than `max_order_age_ms` at pick-up is EXPIRED, and so
  is one the exchange kept refusing before execution (connection refused, overload, 429,
  clock skew, an open breaker) or the shared rate budget could not let out in that time:
  such a POST is retried with the same client id only while the order is younger than that;
* a cancel that won the race (the gateway cancels NEW orders itself) makes the send a no-op;
* a Redis blip does not strand an order: store calls are retried with backoff for a
  bounded time, and what is still unwritten after that is settled by the reconciler.

Nothing here publishes: every stored change goes to the outbox in the same write.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar, cast

from order_execution.exchange.algo_orders import to_algo_report
from order_execution.exchange.answers import to_report
from order_execution.exchange.client import BinanceClient
from order_execution.exchange.errors import (
    BudgetExceeded,
    ClockSkew,
    DuplicateClientOrderId,
    ExchangeError,
    NotExecuted,
    OrderNotFoundAtExchange,
    OrderRejected,
    OutcomeUnknown,
    RateLimited,
    UnknownOrder,
)
from order_execution.orders import fsm
from order_execution.orders.errors import NotReplicated, OrderServiceError, StoreConflict, StoreUnavailable
from order_execution.orders.log_fields import order_fields
from order_execution.orders.model import Order, OrderState, now_ms
from order_execution.orders.store import OrderStore
from order_execution.service_layer.order_sync import cancel_at_exchange, sync_order

log = logging.getLogger(__name__)

S = OrderState
T = TypeVar("T")

# Querying an UNKNOWN order: again after these delays (ms). After the last miss the
# order stays UNKNOWN and the listener's reconciler settles it once the exchange's
# acceptance window has passed; a miss here proves nothing.
RECONCILE_DELAYS_MS = (200, 1000, 3000)

_BACKOFF_START_S = 0.05
_BACKOFF_MAX_S = 1.0


class CancelNotSettled(OrderServiceError):
    """The cancel could not be settled yet (create still in flight, exchange busy); retry it."""

    transient = True


@dataclass
class OrderExecutor:
    """Runs the order actors' logic against one store and exchange client."""

    store: OrderStore
    exchange: BinanceClient
    max_order_age_ms: int
    schedule_reconcile: Callable[[Order, int, int], Awaitable[None]]
    request_timeout_ms: int = 5000
    store_retry_ms: int = 10_000  # how long a write that must land (after a POST) is retried

    async def submit(self, order_id: str, queued: str | None = None) -> None:
        """Send a NEW order to the exchange once, and record what came back.

        `queued` is the order's JSON as queued, if the message carries it (saves a read).
        """
        as_queued = Order.from_json(queued) if queued else None
        # One stamp for every try: a try whose claim was stored but whose reply was lost (the
        # primary died) leaves the order SUBMITTING with it, and the next try must know that
        # claim for its own, not leave it to "another worker" that does not exist.
        claim_at = now_ms()
        claimed = await self._store_call(
            lambda: self.store.transition(order_id, lambda o: self._claim(o, claim_at), current=as_queued),
            budget_ms=self.max_order_age_ms,
        )
        order = claimed.order
        own_claim = order.state is S.SUBMITTING and order.sent_at == claim_at
        if not claimed.changed and not own_claim:
            if order.state is S.SUBMITTING and self._claim_may_be_live(order):
                log.info(
                    "order %s is being sent by another worker; leaving it",
                    order_id,
                    extra=order_fields(order),
                )
            elif order.state is S.SUBMITTING:
                # The worker that claimed it died mid-send: the POST may have happened.
                await self._move(
                    order_id, lambda o: fsm.transition(o, S.UNKNOWN, reason="redelivered mid-send")
                )
                await self.reconcile(order_id, attempt=0)
            else:
                log.info("order %s is %s; not sending", order_id, order.state, extra=order_fields(order))
            return
        if order.state is S.EXPIRED:
            return
        try:
            reply = await self._post(order)
        except OrderRejected as exc:
            reason = str(exc)
            await self._move(order_id, lambda o: fsm.transition(o, S.REJECTED, reason=reason), order)
        except _GaveUpUnsent as exc:
            await self._give_up_unsent(order_id, str(exc))
        except (OutcomeUnknown, DuplicateClientOrderId) as exc:
            log.warning(
                "order %s: outcome unknown (%s); reconciling", order_id, exc, extra=order_fields(order)
            )
            reason = str(exc)
            await self._move(order_id, lambda o: fsm.transition(o, S.UNKNOWN, reason=reason), order)
            await self.reconcile(order_id, attempt=0)
        else:
            report = to_algo_report(reply) if order.type.is_conditional else to_report(reply)
            await self._move(order_id, lambda o: fsm.apply_report(o, report), order)

    def _claim_may_be_live(self, order: Order) -> bool:
        """Whether the worker that claimed `order` may still be sending it."""
        live_until = fsm.claim_live_until(
            order, max_order_age_ms=self.max_order_age_ms, request_timeout_ms=self.request_timeout_ms
        )
        return now_ms() < live_until

    def _claim(self, order: Order, claim_at: int) -> Order | None:
        """NEW -> SUBMITTING stamped `claim_at` (Unix ms, as `sent_at`), or NEW -> EXPIRED if it
        waited too long; None for any other state."""
        if order.state is not S.NEW:
            return None
        age = now_ms() - order.created_at
        if age > self.max_order_age_ms:
            reason = f"waited {age} ms in the queue, over max_order_age_ms={self.max_order_age_ms}"
            return fsm.transition(order, S.EXPIRED, reason=reason)
        claimed = fsm.transition(order, S.SUBMITTING)
        return claimed.replace(sent_at=claim_at) if claimed else None

    async def _post(self, order: Order) -> dict[str, Any]:
        """POST the order; a refusal before execution is retried while the order is young enough.

        Raises _GaveUpUnsent when the order was never executed and may not be tried again.
        """
        order_id = order.order_id
        backoff = _BACKOFF_START_S
        while True:
            send = self.exchange.new_algo_order if order.type.is_conditional else self.exchange.new_order
            try:
                return await send(
                    order,
                    deadline_ms=order.created_at + self.max_order_age_ms,
                    after_wait=lambda: self._restamp(order_id, "waiting for the rate budget"),
                )
            except BudgetExceeded as exc:
                raise _GaveUpUnsent(f"not sent within max_order_age_ms: {exc}") from exc
            except NotExecuted as exc:
                if isinstance(exc, ClockSkew):
                    try:
                        await self.exchange.sync_clock()
                    except ExchangeError as sync_failed:  # the backoff below tries again
                        log.warning(
                            "order %s: clock resync failed (%s)",
                            order_id,
                            sync_failed,
                            extra=order_fields(order),
                        )
                wait_s = exc.retry_after_s if isinstance(exc, RateLimited) else backoff
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                if now_ms() + wait_s * 1000 > order.created_at + self.max_order_age_ms:
                    raise _GaveUpUnsent(f"not sent within max_order_age_ms: {exc}") from exc
                log.warning(
                    "order %s: %s; sending again in %.2f s",
                    order.order_id,
                    exc,
                    wait_s,
                    extra=order_fields(order),
                )
                await asyncio.sleep(wait_s)
                order = await self._restamp(order_id, f"retrying after {exc}")

    async def _restamp(self, order_id: str, doing: str) -> Order:
        """Record that a POST starts now, so the reconciler's acceptance window runs from it.

        Raises _GaveUpUnsent if the order left SUBMITTING meanwhile (a cancel came in): not sent.
        """
        restamped = await self._store_call(
            lambda: self.store.transition(order_id, _restamp_send), budget_ms=self.store_retry_ms
        )
        if restamped.order.state is not S.SUBMITTING:
            raise _GaveUpUnsent(f"{restamped.order.state} while {doing}")
        return restamped.order

    async def _give_up_unsent(self, order_id: str, reason: str) -> None:
        """Never executed, and now too old to send: EXPIRED, or CANCELED if a cancel came in meanwhile."""

        def give_up(order: Order) -> Order | None:
            if order.state is S.PENDING_CANCEL:
                return fsm.transition(order, S.CANCELED, reason="canceled before it reached the exchange")
            return fsm.transition(order, S.EXPIRED, reason=reason)

        await self._move(order_id, give_up)

    async def cancel(self, order_id: str) -> None:
        """Cancel a PENDING_CANCEL order at the exchange and record how it ended.

        Raises CancelNotSettled when it should be tried again later; after the actor's
        retries the listener's reconciler takes over.
        """
        order = await self._store_call(lambda: self.store.get(order_id), budget_ms=self.store_retry_ms)
        if order.state is not S.PENDING_CANCEL:
            return
        try:
            report = await cancel_at_exchange(self.exchange, order)
        except UnknownOrder:
            await self._settle_from_query(order)
        except (NotExecuted, OutcomeUnknown) as exc:
            raise CancelNotSettled(f"order {order_id}: {exc}") from exc
        else:
            await self._move(order_id, lambda o: fsm.apply_report(o, report))

    async def cancel_all(self, symbol: str) -> None:
        """Cancel every open order and algo order of `symbol` at the exchange.

        Our orders the gateway moved to PENDING_CANCEL settle from their own events (or
        the reconciler's query). Raises CancelNotSettled when it should be tried again.
        """
        try:
            await self.exchange.cancel_all_orders(symbol)
        except (NotExecuted, OutcomeUnknown) as exc:
            raise CancelNotSettled(f"cancel-all {symbol}: {exc}") from exc
        log.info("canceled every open order of %s at the exchange", symbol)

    async def amend(self, order_id: str, price: str, quantity: str) -> None:
        """Amend a resting LIMIT order at the exchange (PUT) and store its new version.

        An order no longer open is left alone; a refusal (-5027 nothing to change, -2013
        gone, a filter) is logged and changes nothing. Raises the transient errors for a retry.
        """
        order = await self._store_call(lambda: self.store.get(order_id), budget_ms=self.store_retry_ms)
        if order.state not in (S.SUBMITTED, S.PARTIALLY_FILLED):
            log.info("order %s is %s; not amending", order_id, order.state, extra=order_fields(order))
            return
        try:
            reply = await self.exchange.amend_order(order, price=Decimal(price), quantity=Decimal(quantity))
        except (OrderRejected, UnknownOrder, OrderNotFoundAtExchange) as exc:
            log.warning("order %s: amendment refused: %s", order_id, exc, extra=order_fields(order))
            return
        report = to_report(reply)
        new_price, new_quantity = Decimal(str(reply["price"])), Decimal(str(reply["origQty"]))

        def amended(current: Order) -> Order | None:
            changed = fsm.amend(current, price=new_price, quantity=new_quantity) or current
            return fsm.apply_report(changed, report) or (changed if changed is not current else None)

        await self._move(order_id, amended)

    async def _settle_from_query(self, order: Order) -> None:
        try:
            settled = (await sync_order(self.store, self.exchange, order)).order
        except OrderNotFoundAtExchange as exc:
            raise CancelNotSettled(f"order {order.order_id} not at the exchange yet") from exc
        if settled.state is S.PENDING_CANCEL:
            raise CancelNotSettled(f"order {order.order_id} still open after -2011")

    async def reconcile(self, order_id: str, attempt: int) -> None:
        """Query an UNKNOWN order by client id and apply what the exchange says.

        A miss is retried after each delay in RECONCILE_DELAYS_MS; after the last one
        the order is left UNKNOWN for the listener's reconciler, which may conclude
        "never placed" only once the exchange's acceptance window has passed.
        """
        order = await self._store_call(lambda: self.store.get(order_id), budget_ms=self.store_retry_ms)
        if order.state is not S.UNKNOWN:
            return
        try:
            await sync_order(self.store, self.exchange, order)
        except (OrderNotFoundAtExchange, NotExecuted, OutcomeUnknown) as exc:
            if attempt < len(RECONCILE_DELAYS_MS):
                await self.schedule_reconcile(order, attempt + 1, RECONCILE_DELAYS_MS[attempt])
            else:
                log.warning(
                    "order %s still unknown (%s); the listener's reconciler will settle it",
                    order_id,
                    exc,
                    extra=order_fields(order),
                )

    async def _move(
        self, order_id: str, change: Callable[[Order], Order | None], last_seen: Order | None = None
    ) -> None:
        """Store `change`; `last_seen` (the order as this worker last wrote it) saves a read."""
        await self._store_call(
            lambda: self.store.transition(order_id, change, current=last_seen), budget_ms=self.store_retry_ms
        )

    async def _store_call(self, call: Callable[[], Awaitable[T]], *, budget_ms: int) -> T:
        """Run a store call, retrying outages (StoreUnavailable) and lost races for up to `budget_ms`.

        A write the replicas have not confirmed (`redis.min_replica_acks`) is not repeated (a
        claim repeated would find itself and not send): its outcome is returned once they hold
        it, so nothing moves on (the POST after a claim, the message's ack) before they do.
        """
        deadline = now_ms() + budget_ms
        backoff = _BACKOFF_START_S
        while True:
            try:
                return await call()
            except NotReplicated as exc:
                return cast(T, await self.store.until_replicated(exc, budget_ms=max(deadline - now_ms(), 0)))
            except (StoreUnavailable, StoreConflict) as exc:
                if now_ms() + backoff * 1000 > deadline:
                    raise
                log.warning("order store: %r; retrying in %.2f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)


class _GaveUpUnsent(Exception):
    """The order was refused before execution every time until its age budget ran out."""


def _restamp_send(order: Order) -> Order | None:
    """Mark a new send attempt, so the acceptance window runs from this POST."""
    if order.state is not S.SUBMITTING:
        return None
    now = now_ms()
    return order.replace(sent_at=now, updated_at=now)
