"""User-data stream events -> the order store.

A recorder serves one exchange account's stream: client order ids are unique per account
only, so each ORDER_TRADE_UPDATE is applied to the order that has that client id in that
account (`OrderStore.find_by_client_id(cid, account)`), never to another account's order
with the same id. It is applied through the state machine, so it lands correctly whatever
else already arrived (the REST reply, the reconciler, an earlier copy of the same event).
Events about orders this service did not place are counted and logged, never adopted.

About half of the events are old news: the NEW and FILLED of an order the worker already
stored from the exchange's reply. The lookup (`OrderStore.find_for_report`) checks in Redis
whether the stored order already reflects the event and then answers just that, so such an
event costs one small round trip and nothing else (`OrderEventRecorder._find` says why in
Redis and not from memory).

An AMENDMENT event records the order's new price and quantity, so an amendment the
exchange made is stored even when the worker that sent it died before storing it.

ALGO_UPDATE events (conditional orders) are applied the same way, by clientAlgoId. When
one names the order a conditional order triggered, that order is queried at once (its
own events may have come first, before anything linked them to us) and its exchange
client id linked to ours, so its later events find it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import cast

from order_execution.exchange.client import BinanceClient
from order_execution.exchange.errors import ExchangeError
from order_execution.exchange.user_stream import OrderEvent
from order_execution.orders import fsm, metrics
from order_execution.orders.errors import NotReplicated, StoreConflict, StoreUnavailable
from order_execution.orders.log_fields import order_fields, order_ref
from order_execution.orders.model import DEFAULT_ACCOUNT, Order, OrderState, now_ms
from order_execution.orders.store import OrderStore, TransitionResult
from order_execution.orders.store_queries import ReportLookup
from order_execution.service_layer.order_sync import sync_triggered

log = logging.getLogger(__name__)

_RETRIES = 8
# After one of our conditional orders fired, events of unknown client ids in its symbol are
# taken for its resulting order (not yet linked) rather than foreign, for this long.
_LINK_WINDOW_MS = 10_000
# How long an event's change, stored on the primary, may wait for its replicas before the
# event is retried (the retry finds the change made and probes again).
_REPLICA_WAIT_MS = 5_000


class OrderEventRecorder:
    """Applies `account`'s stream events to its stored orders (`exchange` is that account's client)."""

    def __init__(
        self, store: OrderStore, exchange: BinanceClient | None = None, *, account: str = DEFAULT_ACCOUNT
    ) -> None:
        self._store = store
        self._exchange = exchange
        self.account = account
        self._lag = metrics.USER_STREAM_LAG.labels(account)
        self.applied = 0
        self.foreign = 0
        self.dropped = 0
        self.reflected = 0  # events the stored order already reflected: nothing shipped, nothing written
        self.awaiting_link = 0  # events of a triggered order that came before the news linking it
        self.coalesced = 0  # acceptances not applied on their own: the trade right after implies them
        self._fired_at: dict[str, int] = {}  # symbol -> when a conditional order of ours last fired

    async def record(self, event: OrderEvent) -> None:
        """Apply `event`; a store outage is retried briefly, then left to the reconciler."""
        await self._record(event)

    async def record_all(self, events: Sequence[OrderEvent]) -> None:
        """Apply `events`, all about one order (one client order id), in their order.

        Their lookups share one round trip: when the stream delivers an order's NEW and its
        trade together, both are checked at once, and a plain acceptance right before a trade of
        the order is not applied on its own (`implied_by`: the trade leaves the order as both
        would; counted in `coalesced`). Each lookup was made before the events ahead
        of it were applied, so once one of them has changed the order, the ones after it are
        applied to the order as that change left it (a compare-and-set, which re-reads if
        anyone else wrote since), not to what their lookup found. A failed shared lookup
        leaves each event to look its order up itself.
        """
        kept = [e for e, after in zip(events, [*events[1:], None], strict=True) if not implied_by(e, after)]
        self.coalesced += len(events) - len(kept)
        events = kept
        if len(events) == 1:
            await self.record(events[0])
            return
        lookups: Sequence[ReportLookup | None]
        try:
            lookups = await self._store.find_for_reports(
                [(e.client_order_id, None if e.amended else e.report, e.symbol) for e in events], self.account
            )
        except StoreUnavailable as exc:
            log.warning("looking up %d user-stream events at once: %r; one by one", len(events), exc)
            lookups = [None] * len(events)
        written: Order | None = None  # the order as the last change made here left it
        for event, lookup in zip(events, lookups, strict=True):
            try:
                now = await self._record(event, lookup, written)
            except Exception as exc:  # a bug in one event's handling must not cost the others theirs
                log.error(
                    "user stream: %s for %s: %r",
                    event.report.state,
                    event.client_order_id,
                    exc,
                    exc_info=exc,
                    extra=order_ref("", event.client_order_id, event.symbol),
                )
                now = written = None
            written = now or written

    async def _record(
        self, event: OrderEvent, lookup: ReportLookup | None = None, written: Order | None = None
    ) -> Order | None:
        """Apply `event` (to `written`, else to what `lookup` found, else to what it looks up), with
        `record`'s retries; returns the order if this event changed it."""
        backoff = 0.05
        for _ in range(_RETRIES):
            try:
                changed = await self._apply(event, lookup, written)
                self._observe_lag(event)
                return changed
            except (StoreUnavailable, StoreConflict) as exc:
                log.warning(
                    "recording %s for %s: %r; retrying",
                    event.report.state,
                    event.client_order_id,
                    exc,
                    extra=order_ref("", event.client_order_id, event.symbol),
                )
                lookup = written = None  # the retry looks afresh
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
        self.dropped += 1
        log.error(
            "gave up recording an event for %s; the reconciler will settle it",
            event.client_order_id,
            extra=order_ref("", event.client_order_id, event.symbol),
        )
        return None

    def _observe_lag(self, event: OrderEvent) -> None:
        """How long after the exchange's event time it was stored (the exchange's clock, as synced)."""
        if event.event_time:
            now = self._exchange.exchange_now_ms() if self._exchange is not None else now_ms()
            self._lag.observe(max(now - event.event_time, 0) / 1000)

    async def _apply(
        self, event: OrderEvent, lookup: ReportLookup | None, written: Order | None
    ) -> Order | None:
        """Apply `event` (see `_record`); returns the order if this changed it."""
        order = written or await self._find(event, lookup)
        if order is None:
            return None
        if order.symbol != event.symbol:
            self._not_ours(event)
            return None
        try:
            result = await self._store.transition(order.order_id, lambda o: _applied(o, event), current=order)
        except NotReplicated as exc:  # stored on the primary: move on only once a replica has it
            outcome = await self._store.until_replicated(exc, budget_ms=_REPLICA_WAIT_MS)
            result = cast(TransitionResult, outcome)
        if result.changed:
            self.applied += 1
            log.debug("user stream: %s now %s", order.order_id, result.order.state, extra=order_fields(order))
        updated = result.order
        if event.conditional and event.report.state is OrderState.TRIGGERED:
            self._fired_at[event.symbol] = now_ms()
        if event.conditional and updated.exchange_order_id and not order.exchange_order_id:
            await self._follow_triggered(updated)
        return updated if result.changed else None

    async def _find(self, event: OrderEvent, lookup: ReportLookup | None = None) -> Order | None:
        """The stored order `event` may change, or None when there is nothing to apply: the stored
        order already reflects the event (the usual fate of the NEW and FILLED events of an order
        the worker stored from the exchange's reply), or no order of the account has its client
        id (then `_not_ours` has judged it). `lookup`: what a shared lookup already found.

        Why one script, not an in-memory filter: whether an event is news depends on what is
        stored now, which the worker, the reconciler, another listener replica or a Redis
        failover change behind this process's back, and what this process saw before a restart
        is gone. So the check runs in Redis on the stored order, in the lookup's round trip, and
        answers "reflected" without the order; only news pays for shipping and decoding the
        order, the state machine and the compare-and-set. An amendment also changes the
        order's terms, which the script does not judge: it is looked up as before.
        """
        if lookup is None:
            if event.amended:
                found = await self._store.find_by_client_id(event.client_order_id, self.account)
                lookup = ReportLookup(found)
            else:
                lookup = await self._store.find_for_report(
                    event.client_order_id, event.report, symbol=event.symbol, account=self.account
                )
        if lookup.reflected:
            await self._reflected(event)
            return None
        if lookup.order is None:
            self._not_ours(event)
        return lookup.order

    async def _reflected(self, event: OrderEvent) -> None:
        """What applying an event that changes nothing still does: answer only once the replicas
        hold what it found (as `OrderStore.transition` does), and note a trigger's time."""
        self.reflected += 1
        try:
            await self._store.confirm_replicated()
        except NotReplicated as exc:
            await self._store.until_replicated(exc, budget_ms=_REPLICA_WAIT_MS)
        if event.conditional and event.report.state is OrderState.TRIGGERED:
            self._fired_at[event.symbol] = now_ms()

    def _not_ours(self, event: OrderEvent) -> None:
        """An event for no order of ours (of its symbol) in this account: awaiting its link, or foreign."""
        if not event.conditional and now_ms() - self._fired_at.get(event.symbol, 0) < _LINK_WINDOW_MS:
            self.awaiting_link += 1
            log.info(
                "user stream: %s %s for clientOrderId %s, probably the order one of ours just "
                "triggered; it is read once the trigger news names it",
                event.symbol,
                event.report.state,
                event.client_order_id,
                extra=order_ref("", event.client_order_id, event.symbol),
            )
            return
        self.foreign += 1
        log.warning(
            "user stream (account %s): %s %s for clientOrderId %s, which this service did not place; ignored",
            self.account,
            event.symbol,
            event.report.state,
            event.client_order_id,
            extra=order_ref("", event.client_order_id, event.symbol),
        )

    async def _follow_triggered(self, order: Order) -> None:
        """Read the order a conditional order just triggered; the reconciler retries a failure."""
        if self._exchange is None:
            return
        try:
            await sync_triggered(self._store, self._exchange, order)
        except ExchangeError as exc:
            log.info(
                "triggered order %s of %s not read yet (%s); the reconciler will",
                order.exchange_order_id,
                order.order_id,
                exc,
                extra=order_fields(order),
            )


def _applied(order: Order, event: OrderEvent) -> Order | None:
    """`order` with `event` applied: an amendment's new terms (the worker may have died before it
    stored them, or its PUT timed out), then the report; None if nothing changes."""
    amended = fsm.amend(order, price=event.amended[0], quantity=event.amended[1]) if event.amended else None
    return fsm.apply_report(amended or order, event.report) or amended


def implied_by(event: OrderEvent, after: OrderEvent | None) -> bool:
    """Whether `event` is a plain acceptance (NEW: nothing filled, no fill, no amendment, not an
    algo's) that `after`, the next event of the same order, wholly contains: a trade (partial or
    full fill) with the same exchange order id. Applying the trade alone leaves the order as
    applying both would (`fsm.apply_report`: the trade moves the order past acceptance from every
    state acceptance would, and carries the same id), so the acceptance needs no lookup of its own.
    A trade, an amendment, a final state and anything conditional are never implied."""
    if after is None or event.conditional or after.conditional or event.amended or after.amended:
        return False
    report, trade = event.report, after.report
    return (
        report.state is OrderState.SUBMITTED
        and not report.fills
        and not report.filled_quantity
        and not report.algo_id
        and bool(trade.fills)
        and trade.state in (OrderState.PARTIALLY_FILLED, OrderState.FILLED)
        and (after.client_order_id, after.symbol) == (event.client_order_id, event.symbol)
        and trade.exchange_order_id == report.exchange_order_id
    )
