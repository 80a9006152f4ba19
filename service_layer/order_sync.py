"""Bring one stored order in line with the exchange's record of it.

Used by the worker (to settle an ambiguous send at once), the listener (when a
conditional order reports the order it triggered) and the reconciler (to settle whatever
the user-data stream did not): query the order by our client id, fetch its trades when
fills are missing, and apply both through the state machine, so the result is the same
whichever source got there first.

A conditional order is queried on the algo service by its clientAlgoId; once it has
triggered, the resulting order is queried by its orderId as well, its trades fetched,
and its exchange client id linked to our order, so its user-stream events find it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from order_execution.exchange.algo_orders import canceled_algo_report, to_algo_report
from order_execution.exchange.answers import to_fill, to_report
from order_execution.exchange.client import BinanceClient
from order_execution.orders import fsm
from order_execution.orders.model import Order
from order_execution.orders.store import OrderStore


@dataclass(frozen=True, slots=True)
class Synced:
    order: Order  # as stored after the exchange's news
    requests: int  # exchange requests it took (the order, and its trades if fills were missing)


async def sync_order(store: OrderStore, exchange: BinanceClient, order: Order) -> Synced:
    """Apply the exchange's state and trades of `order` to the store.

    Raises OrderNotFoundAtExchange (-2013) when the exchange has no such order, and the
    exchange client's other errors as they come.
    """
    if order.type.is_conditional:
        return await _sync_conditional(store, exchange, order)
    reply = await exchange.query_order(order.symbol, order.client_order_id)
    return await _apply_order_reply(store, exchange, order, reply, requests=1)


async def sync_triggered(store: OrderStore, exchange: BinanceClient, order: Order) -> Synced:
    """Apply the state and trades of the order a conditional `order` triggered (its
    `exchange_order_id`), and link that order's client id to ours, in `order`'s account."""
    reply = await exchange.query_order_by_id(order.symbol, order.exchange_order_id)
    client_id = str(reply.get("clientOrderId") or "")
    if client_id and client_id != order.client_order_id:
        await store.link_client_id(client_id, order.order_id, order.account)
    return await _apply_order_reply(store, exchange, order, reply, requests=1)


async def _sync_conditional(store: OrderStore, exchange: BinanceClient, order: Order) -> Synced:
    report = to_algo_report(await exchange.query_algo_order(order.client_order_id))
    result = await store.transition(order.order_id, lambda current: fsm.apply_report(current, report))
    if not result.order.exchange_order_id:
        return Synced(result.order, 1)
    triggered = await sync_triggered(store, exchange, result.order)
    return Synced(triggered.order, 1 + triggered.requests)


async def _apply_order_reply(
    store: OrderStore, exchange: BinanceClient, order: Order, reply: dict[str, Any], *, requests: int
) -> Synced:
    report = to_report(reply)
    if report.filled_quantity > fsm.recorded_quantity(order):
        trades = await exchange.user_trades(order.symbol, report.exchange_order_id)
        requests += 1
        report = replace(report, fills=tuple(to_fill(t) for t in trades))
    result = await store.transition(order.order_id, lambda current: fsm.apply_report(current, report))
    return Synced(result.order, requests)


async def cancel_at_exchange(exchange: BinanceClient, order: Order) -> fsm.ExchangeReport:
    """Cancel `order` at the exchange and return what the answer says.

    A conditional order that has not triggered is canceled on the algo service; one that
    has, through the order it triggered. Raises UnknownOrder (-2011) when there is nothing
    open to cancel, and the client's other errors as they come.
    """
    if order.type.is_conditional and not order.exchange_order_id:
        return canceled_algo_report(await exchange.cancel_algo_order(order.client_order_id))
    if order.type.is_conditional:
        return to_report(await exchange.cancel_order_by_id(order.symbol, order.exchange_order_id))
    return to_report(await exchange.cancel_order(order.symbol, order.client_order_id))
