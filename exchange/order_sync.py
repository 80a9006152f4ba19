"""Bring one stored order in line with the exchange's record of it.

Used by the worker (to settle an ambiguous send at once) and by the listener's
reconciler (to settle whatever the user-data stream did not): query the order by our
client id, fetch its trades when fills are missing, and apply both through the state
machine, so the result is the same whichever source got there first.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from exchange.client import BinanceClient, to_fill, to_report
from orders import fsm
from orders.model import Order
from orders.store import OrderStore


@dataclass(frozen=True, slots=True)
class Synced:
    order: Order  # as stored after the exchange's news
    requests: int  # exchange requests it took (the order, and its trades if fills were missing)


async def sync_order(store: OrderStore, exchange: BinanceClient, order: Order) -> Synced:
    """Apply the exchange's state and trades of `order` to the store.

    Raises OrderNotFoundAtExchange (-2013) when the exchange has no such order, and the
    exchange client's other errors as they come.
    """
    reply = await exchange.query_order(order.symbol, order.client_order_id)
    report = to_report(reply)
    requests = 1
    if report.filled_quantity > fsm.recorded_quantity(order):
        trades = await exchange.user_trades(order.symbol, report.exchange_order_id)
        requests += 1
        report = replace(report, fills=tuple(to_fill(t) for t in trades))
    result = await store.transition(order.order_id, lambda current: fsm.apply_report(current, report))
    return Synced(result.order, requests)
