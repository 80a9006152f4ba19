"""User-data stream events -> the order store.

Each ORDER_TRADE_UPDATE is applied to the order with that client id through the state
machine, so it lands correctly whatever else already arrived (the REST reply, the
reconciler, an earlier copy of the same event). Events about orders this service did
not place are counted and logged, never adopted.
"""

from __future__ import annotations

import asyncio
import logging

from exchange.user_stream import OrderEvent
from orders import fsm
from orders.logs import order_fields, order_ref
from orders.store import STORE_OUTAGES, OrderStore

log = logging.getLogger(__name__)

_RETRIES = 8


class OrderEventRecorder:
    """Applies stream events to stored orders."""

    def __init__(self, store: OrderStore) -> None:
        self._store = store
        self.applied = 0
        self.foreign = 0
        self.dropped = 0

    async def record(self, event: OrderEvent) -> None:
        """Apply `event`; a store outage is retried briefly, then left to the reconciler."""
        backoff = 0.05
        for _ in range(_RETRIES):
            try:
                await self._apply(event)
                return
            except STORE_OUTAGES as exc:
                log.warning(
                    "recording %s for %s: %r; retrying",
                    event.report.state,
                    event.client_order_id,
                    exc,
                    extra=order_ref("", event.client_order_id, event.symbol),
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
        self.dropped += 1
        log.error(
            "gave up recording an event for %s; the reconciler will settle it",
            event.client_order_id,
            extra=order_ref("", event.client_order_id, event.symbol),
        )

    async def _apply(self, event: OrderEvent) -> None:
        order = await self._store.find_by_client_id(event.client_order_id)
        if order is None or order.symbol != event.symbol:
            self.foreign += 1
            log.warning(
                "user stream: %s %s for clientOrderId %s, which this service did not place; ignored",
                event.symbol,
                event.report.state,
                event.client_order_id,
                extra=order_ref("", event.client_order_id, event.symbol),
            )
            return
        result = await self._store.transition(
            order.order_id, lambda o: fsm.apply_report(o, event.report), current=order
        )
        if result.changed:
            self.applied += 1
            log.debug("user stream: %s now %s", order.order_id, result.order.state, extra=order_fields(order))
