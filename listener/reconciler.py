"""The reconciler: every unsettled order is brought to the exchange's truth, by evidence only.

A reconciler serves one exchange account, with that account's client: the store's unsettled
index holds every account's orders, and a sweep takes only its own account's (`Order.account`),
so an account's orders are queried with the key that placed them and one account's sweep
never reads or moves another's. What it queues again goes to the order's account's queue
(`tasks.messages` routes by `order.account`).

A sweep walks the store's unsettled index (oldest first, continuing where the last
sweep's query budget ran out) and, for each order whose last news is older than
`grace_ms` (fresh ones are still in a worker's or the user stream's hands):

* NEW — older than `max_order_age_ms`: EXPIRED (it can no longer be sent); otherwise its
  submit message is queued again (the worker's claim makes a second message harmless);
* SUBMITTING, UNKNOWN — queried by client id; found: its real state and trades. Not
  found once the exchange's acceptance window has passed since the last send (request
  timeout + recvWindow + margin: a request older than that can no longer be accepted),
  it was never placed: REJECTED with the reason, or queued to be sent once more with the
  same client id, as `reconcile.unknown_not_found` says. Before that, a miss proves nothing;
* PENDING_CANCEL — queried; still open: canceled now; ended: its final state; never
  placed (as above): CANCELED;
* SUBMITTED, PARTIALLY_FILLED — checked against one `openOrders` snapshot per sweep;
  queried only when the exchange shows more fills or no longer lists it (the order a
  conditional order triggered is looked up by its orderId);
* WAITING_TRIGGER — checked against one `openAlgoOrders` snapshot per sweep; queried on
  the algo service (by clientAlgoId) only when it is no longer listed;
* TRIGGERED — queried: the algo order, then the order it triggered;
* final but fills missing — its trades fetched (`userTrades`);
* acknowledged once (it has an exchange id) but unknown to the exchange now — past
  Binance's retention, or a fresh simulator behind `up`: EXPIRED, as nothing more will
  ever be learned of it.

Open orders at the account that we do not know are reported (log, count), not adopted.
A sweep spends at most `max_queries_per_cycle` exchange queries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from order_execution.exchange.client import BinanceClient
from order_execution.exchange.errors import CircuitOpen, ExchangeError, OrderNotFoundAtExchange, UnknownOrder
from order_execution.orders import fsm, metrics
from order_execution.orders.log_fields import order_fields
from order_execution.orders.model import DEFAULT_ACCOUNT, Order, OrderState, now_ms
from order_execution.orders.store import OrderStore
from order_execution.runtime.settings import Settings
from order_execution.service_layer.order_sync import cancel_at_exchange, sync_order
from order_execution.tasks.messages import submit_order_push

log = logging.getLogger(__name__)

S = OrderState
_OPEN = (S.SUBMITTED, S.PARTIALLY_FILLED)
_SCAN_LIMIT = 10_000  # orders looked at per sweep; the query budget is the real bound
_MAX_REQUESTS_PER_ORDER = 2
_FOREIGN_CHECK_MS = 60_000  # the order and its trades, or the order and a cancel


@dataclass(frozen=True, slots=True)
class ReconcilePolicy:
    grace_ms: int
    max_order_age_ms: int
    acceptance_window_ms: int
    request_timeout_ms: int
    resend_unplaced: bool
    max_queries: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ReconcilePolicy:
        r, x = settings.reconcile, settings.exchange
        return cls(
            grace_ms=r.grace_ms,
            max_order_age_ms=settings.worker.max_order_age_ms,
            acceptance_window_ms=x.request_timeout_ms + x.recv_window_ms + r.acceptance_margin_ms,
            request_timeout_ms=x.request_timeout_ms,
            resend_unplaced=r.unknown_not_found == "resend",
            max_queries=r.max_queries_per_cycle,
        )


@dataclass
class SweepResult:
    looked_at: int = 0
    queries: int = 0
    changed: int = 0
    budget_exhausted: bool = False
    unknown_at_exchange: list[str] = field(default_factory=list)


class Reconciler:
    """Runs sweeps of `account`'s orders against one store and that account's exchange client
    (see the module docstring)."""

    def __init__(
        self,
        store: OrderStore,
        exchange: BinanceClient,
        policy: ReconcilePolicy,
        *,
        account: str = DEFAULT_ACCOUNT,
    ) -> None:
        self._store = store
        self._exchange = exchange
        self._policy = policy
        self.account = account
        self._resume_after: tuple[int, str] | None = None
        self._reported_unknown: set[str] = set()
        self._gone: set[str] = set()  # final orders whose missing trades the exchange no longer has
        self._requeued_at: dict[str, int] = {}  # NEW orders whose message we queued again, and when
        self._last_snapshot_ms = now_ms()  # the last openOrders snapshot
        self.unknown_orders_seen = 0

    async def sweep(self) -> SweepResult:
        """One pass over the account's unsettled orders; returns what it did."""
        result = SweepResult()
        ids = await self._store.unsettled(after=self._resume_after, limit=_SCAN_LIMIT)
        if self._resume_after is not None and len(ids) < _SCAN_LIMIT:
            ids += await self._store.unsettled(limit=_SCAN_LIMIT - len(ids))  # wrap around
        orders = [
            o for o in await self._store.get_many(list(dict.fromkeys(ids))) if o.account == self.account
        ]
        now = now_ms()
        due = [
            o
            for o in orders
            if now - (o.updated_at or o.created_at) >= self._policy.grace_ms and o.order_id not in self._gone
        ]
        result.looked_at = len(due)
        still_new = {o.order_id for o in orders if o.state is S.NEW}
        self._requeued_at = {k: v for k, v in self._requeued_at.items() if k in still_new}
        snapshot: dict[str, dict[str, Any]] | None = None
        # Also once a minute with nothing of ours open, to spot orders placed behind our back.
        if any(o.state in _OPEN for o in due) or now - self._last_snapshot_ms > _FOREIGN_CHECK_MS:
            self._last_snapshot_ms = now
            snapshot = await self._open_orders_snapshot(result)
        waiting: set[str] | None = None
        if any(o.state is S.WAITING_TRIGGER for o in due):
            waiting = await self._open_algo_snapshot(result)
        resumed_from, self._resume_after = self._resume_after, None
        last_checked: tuple[int, str] | None = None
        for order in due:
            if result.queries + _MAX_REQUESTS_PER_ORDER > self._policy.max_queries:
                result.budget_exhausted = True
                self._resume_after = last_checked or resumed_from
                break
            checked_before, last_checked = last_checked, (order.created_at, order.order_id)
            try:
                if (
                    order.state is S.WAITING_TRIGGER
                    and waiting is not None
                    and order.client_order_id in waiting
                ):
                    continue  # still waiting for its trigger at the exchange
                if await self._check(order, snapshot, result):
                    result.changed += 1
            except CircuitOpen as exc:
                # Every further query would be refused alike: one line, and the next sweep
                # starts from this order.
                log.info("reconcile: %s; the rest of this sweep waits for the next one", exc)
                self._resume_after = checked_before or resumed_from
                break
            except ExchangeError as exc:
                log.info(
                    "reconcile %s (%s): %s; trying again next sweep",
                    order.order_id,
                    order.state,
                    exc,
                    extra=order_fields(order),
                )
        if snapshot is not None:
            await self._report_unknown(snapshot, {o.client_order_id for o in orders}, result)
        return result

    async def _open_orders_snapshot(self, result: SweepResult) -> dict[str, dict[str, Any]] | None:
        result.queries += 1
        try:
            return {str(row["clientOrderId"]): row for row in await self._exchange.open_orders()}
        except ExchangeError as exc:
            log.info("reconcile: openOrders failed (%s); querying open orders one by one", exc)
            return None

    async def _open_algo_snapshot(self, result: SweepResult) -> set[str] | None:
        """The clientAlgoIds of the account's algo orders waiting for their trigger; None if unread."""
        result.queries += 1
        try:
            return {str(row["clientAlgoId"]) for row in await self._exchange.open_algo_orders()}
        except ExchangeError as exc:
            log.info("reconcile: openAlgoOrders failed (%s); querying waiting orders one by one", exc)
            return None

    async def _check(
        self, order: Order, snapshot: dict[str, dict[str, Any]] | None, result: SweepResult
    ) -> bool:
        """Settle what can be settled of one order; True if it changed."""
        now = now_ms()
        if order.state is S.NEW:
            return await self._unstick_new(order, now)
        if order.state in _OPEN and snapshot is not None:
            listed = _listed(snapshot, order)
            # Compared with the fills recorded, not the filled quantity reported: a reply can carry
            # the quantity while the trade event with the fill itself was lost.
            executed = Decimal(str(listed.get("executedQty", "0"))) if listed is not None else None
            if executed is not None and executed <= fsm.recorded_quantity(order):
                return False  # open at the exchange with nothing new
        if order.state is S.SUBMITTING and now < self._claim_live_until(order):
            return False  # a worker may still be sending it (or waiting for the rate budget to)
        try:
            synced = await sync_order(self._store, self._exchange, order)
        except OrderNotFoundAtExchange:
            result.queries += 1
            if order.exchange_order_id:
                return await self._vanished(order)
            if now < self._window_end(order):
                return False
            return await self._never_placed(order)
        except ExchangeError:
            result.queries += 1
            raise
        result.queries += synced.requests
        changed = synced.order.version != order.version
        if synced.order.state is S.PENDING_CANCEL and result.queries < self._policy.max_queries:
            result.queries += 1
            changed |= await self._cancel_now(synced.order)
        if changed:
            _mismatch("state")
            log.info(
                "reconciled %s: %s -> %s from the exchange",
                order.order_id,
                order.state,
                synced.order.state,
                extra=order_fields(order),
            )
        return changed

    def _claim_live_until(self, order: Order) -> int:
        """Until when a SUBMITTING order is left alone: its worker may be sending it, or its POST
        may still be accepted."""
        live_until = fsm.claim_live_until(
            order,
            max_order_age_ms=self._policy.max_order_age_ms,
            request_timeout_ms=self._policy.request_timeout_ms,
        )
        return max(live_until, self._window_end(order))

    def _window_end(self, order: Order) -> int:
        return (order.sent_at or order.updated_at) + self._policy.acceptance_window_ms

    async def _unstick_new(self, order: Order, now: int) -> bool:
        age = now - order.created_at
        if age > self._policy.max_order_age_ms:
            limit = self._policy.max_order_age_ms
            _mismatch("unpicked_expired")
            return await self._move(order, S.EXPIRED, f"not picked up within max_order_age_ms={limit}")
        # Once per grace period at most: a long queue must not be flooded with copies.
        if now - self._requeued_at.get(order.order_id, 0) < max(self._policy.grace_ms, 1000):
            return False
        self._requeued_at[order.order_id] = now
        log.warning(
            "order %s NEW for %d ms; queueing its submit message again",
            order.order_id,
            age,
            extra=order_fields(order),
        )
        await self._store.enqueue(submit_order_push(order))
        return False

    async def _never_placed(self, order: Order) -> bool:
        """Not found after the acceptance window: the exchange never got it."""
        waited = now_ms() - (order.sent_at or order.updated_at)
        _mismatch("never_placed")
        log.warning(
            "order %s (%s) not at the exchange %d ms after it was sent: never placed",
            order.order_id,
            order.state,
            waited,
            extra=order_fields(order),
        )
        if order.state is S.PENDING_CANCEL:
            return await self._move(order, S.CANCELED, "canceled; it never reached the exchange")
        if not self._policy.resend_unplaced:
            return await self._move(
                order, S.REJECTED, f"never placed: the exchange did not have it {waited} ms after it was sent"
            )
        log.warning(
            "order %s not at the exchange %d ms after it was sent; sending again",
            order.order_id,
            waited,
            extra=order_fields(order),
        )
        result = await self._store.transition(
            order.order_id,
            lambda o: fsm.transition(o, S.NEW, reason="not placed; sending again"),
            enqueue=submit_order_push,
        )
        return result.changed

    async def _move(self, order: Order, target: OrderState, reason: str) -> bool:
        result = await self._store.transition(
            order.order_id, lambda o: fsm.transition(o, target, reason=reason)
        )
        return result.changed

    async def _vanished(self, order: Order) -> bool:
        """The exchange acknowledged it once but has no record now (past Binance's retention, or a
        different exchange behind the same settings): nothing more will ever be learned of it."""
        _mismatch("vanished")
        log.warning(
            "order %s (exchange id %s) is no longer known to the exchange; marking it EXPIRED",
            order.order_id,
            order.exchange_order_id,
            extra=order_fields(order),
        )
        if order.state in fsm.FINAL_STATES:
            # Its missing trades are gone with it; say so once rather than query it every sweep.
            self._gone.add(order.order_id)
            return False
        return await self._move(order, S.EXPIRED, "the exchange no longer knows this order (-2013)")

    async def _cancel_now(self, order: Order) -> bool:
        """A PENDING_CANCEL order still open at the exchange (its cancel message gave up): cancel it."""
        try:
            report = await cancel_at_exchange(self._exchange, order)
        except UnknownOrder:
            return False  # it ended meanwhile; the next sweep reads how
        result = await self._store.transition(order.order_id, lambda o: fsm.apply_report(o, report))
        return result.changed

    async def _report_unknown(
        self, snapshot: dict[str, dict[str, Any]], ours: set[str], result: SweepResult
    ) -> None:
        for client_id, row in snapshot.items():
            if client_id in ours or client_id in self._reported_unknown:
                continue
            if await self._store.find_by_client_id(client_id, self.account) is not None:
                continue
            self._reported_unknown.add(client_id)
            self.unknown_orders_seen += 1
            _mismatch("foreign_order")
            result.unknown_at_exchange.append(client_id)
            log.warning(
                "open order at the exchange (account %s) that we did not place: %s %s %s %s @ %s "
                "(clientOrderId %s); left alone",
                self.account,
                row.get("symbol"),
                row.get("side"),
                row.get("origQty"),
                row.get("type"),
                row.get("price"),
                client_id,
                extra={"client_order_id": client_id, "symbol": str(row.get("symbol", ""))},
            )


def _listed(snapshot: dict[str, dict[str, Any]], order: Order) -> dict[str, Any] | None:
    """`order`'s row in an openOrders snapshot: by our client id, or for the order a conditional
    order triggered (its client id is the exchange's) by its orderId."""
    if not order.type.is_conditional:
        return snapshot.get(order.client_order_id)
    return next(
        (row for row in snapshot.values() if str(row.get("orderId")) == order.exchange_order_id), None
    )


def _mismatch(kind: str) -> None:
    """Count an order found out of line with the exchange (`kind` is one of metrics.MISMATCH_KINDS)."""
    metrics.RECONCILE_MISMATCHES.labels(kind).inc()
