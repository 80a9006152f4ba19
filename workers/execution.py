"""What the order actors do: send, cancel and reconcile one order.

Invariants kept here (DESIGN.md):
* never sent twice: an order is claimed NEW -> SUBMITTING before the POST; a redelivered
  message finds it SUBMITTING and reconciles instead of posting again; an ambiguous
  outcome moves it to UNKNOWN and a query by client id settles it;
* never sent stale: an order older than `max_order_age_ms` at pick-up is EXPIRED;
* a cancel that won the race (the gateway cancels NEW orders itself) makes the send a no-op.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from orders import fsm
from orders.events import EventBus
from orders.model import Order, OrderState, now_ms
from orders.store import OrderStore
from workers.binance import BinanceClient, to_report
from workers.errors import (
    DuplicateClientOrderId,
    NotExecuted,
    OrderNotFoundAtExchange,
    OrderRejected,
    OutcomeUnknown,
    UnknownOrder,
)

log = logging.getLogger(__name__)

S = OrderState

# Reconciling an UNKNOWN order: query after these delays (ms); after the last miss the
# exchange has had seconds to show the order, so it never got it.
RECONCILE_DELAYS_MS = (200, 1000, 3000)


class CancelNotSettled(Exception):
    """The cancel could not be settled yet (create still in flight, exchange busy); retry it."""


@dataclass
class OrderExecutor:
    """Runs the order actors' logic against one store, bus and exchange client."""

    store: OrderStore
    bus: EventBus
    exchange: BinanceClient
    max_order_age_ms: int
    schedule_reconcile: Callable[[Order, int, int], Awaitable[None]]

    async def submit(self, order_id: str) -> None:
        """Send a NEW order to the exchange once, and record what came back."""
        claimed = await self.store.transition(order_id, self._claim)
        order = claimed.order
        if not claimed.changed:
            if order.state is S.SUBMITTING:
                # The worker that claimed it died mid-send: the POST may have happened.
                await self._move(
                    order_id, lambda o: fsm.transition(o, S.UNKNOWN, reason="redelivered mid-send")
                )
                await self.reconcile(order_id, attempt=0)
            else:
                log.info("order %s is %s; not sending", order_id, order.state)
            return
        if order.state is S.EXPIRED:
            await self._publish(order)
            return
        try:
            reply = await self.exchange.new_order(order)
        except (OrderRejected, NotExecuted) as exc:
            reason = str(exc)
            await self._move(order_id, lambda o: fsm.transition(o, S.REJECTED, reason=reason))
        except (OutcomeUnknown, DuplicateClientOrderId) as exc:
            log.warning("order %s: outcome unknown (%s); reconciling", order_id, exc)
            reason = str(exc)
            await self._move(order_id, lambda o: fsm.transition(o, S.UNKNOWN, reason=reason))
            await self.reconcile(order_id, attempt=0)
        else:
            report = to_report(reply)
            await self._move(order_id, lambda o: fsm.apply_report(o, report))

    def _claim(self, order: Order) -> Order | None:
        """NEW -> SUBMITTING, or NEW -> EXPIRED if it waited too long; None for any other state."""
        if order.state is not S.NEW:
            return None
        age = now_ms() - order.created_at
        if age > self.max_order_age_ms:
            reason = f"waited {age} ms in the queue, over max_order_age_ms={self.max_order_age_ms}"
            return fsm.transition(order, S.EXPIRED, reason=reason)
        return fsm.transition(order, S.SUBMITTING)

    async def cancel(self, order_id: str) -> None:
        """Cancel a PENDING_CANCEL order at the exchange and record how it ended.

        Raises CancelNotSettled when it should be tried again later.
        """
        order = await self.store.get(order_id)
        if order.state is not S.PENDING_CANCEL:
            return
        try:
            reply = await self.exchange.cancel_order(order.symbol, order.client_order_id)
        except UnknownOrder:
            await self._settle_from_query(order)
        except (NotExecuted, OutcomeUnknown) as exc:
            raise CancelNotSettled(f"order {order_id}: {exc}") from exc
        else:
            report = to_report(reply)
            await self._move(order_id, lambda o: fsm.apply_report(o, report))

    async def _settle_from_query(self, order: Order) -> None:
        try:
            reply = await self.exchange.query_order(order.symbol, order.client_order_id)
        except OrderNotFoundAtExchange as exc:
            raise CancelNotSettled(f"order {order.order_id} not at the exchange yet") from exc
        report = to_report(reply)
        if report.state in (S.SUBMITTED, S.PARTIALLY_FILLED):
            raise CancelNotSettled(f"order {order.order_id} still open after -2011")
        await self._move(order.order_id, lambda o: fsm.apply_report(o, report))

    async def reconcile(self, order_id: str, attempt: int) -> None:
        """Settle an UNKNOWN order by querying it by client id.

        If the exchange has never heard of it after every delay in RECONCILE_DELAYS_MS,
        it was not placed: REJECTED. Otherwise its exchange state is applied.
        """
        order = await self.store.get(order_id)
        if order.state is not S.UNKNOWN:
            return
        try:
            reply = await self.exchange.query_order(order.symbol, order.client_order_id)
        except (OrderNotFoundAtExchange, NotExecuted, OutcomeUnknown) as exc:
            if attempt < len(RECONCILE_DELAYS_MS):
                await self.schedule_reconcile(order, attempt + 1, RECONCILE_DELAYS_MS[attempt])
                return
            if not isinstance(exc, OrderNotFoundAtExchange):
                raise
            reason = f"not found at the exchange after {attempt + 1} queries"
            await self._move(order_id, lambda o: fsm.transition(o, S.REJECTED, reason=reason))
            return
        report = to_report(reply)
        await self._move(order_id, lambda o: fsm.apply_report(o, report))

    async def _move(self, order_id: str, change: Callable[[Order], Order | None]) -> None:
        result = await self.store.transition(order_id, change)
        if result.changed:
            await self._publish(result.order)

    async def _publish(self, order: Order) -> None:
        try:
            await self.bus.publish_update(order)
        except Exception:  # the store has it; subscribers can re-read with GetOrder
            log.exception("order %s: publishing %s failed", order.order_id, order.state)
