"""Handlers of the calls on orders one already has: GetOrder, ListOrders and CancelOrder.

With authentication on, a caller reads, lists and cancels only its own orders, on the
exchange accounts it may trade (`auth.clients[].accounts`); another's, or one on another
account, answers NOT_FOUND, exactly like an id never used, so ids cannot be probed. With auth
off (`caller=None`) nothing is scoped. ListOrders covers the accounts the intake resolved
(`ListOrders.accounts`). A read scans a bounded number of orders per call
(`server.list_scan_cap`, continued by page token).
"""

from __future__ import annotations

from order_execution.gateway.auth import Caller
from order_execution.gateway.commands import CancelOrder, ListOrders
from order_execution.gateway.validation import DEFAULT_PAGE
from order_execution.orders import fsm
from order_execution.orders.errors import InvalidOrder, OrderNotCancelable, OrderNotFound
from order_execution.orders.model import Order
from order_execution.orders.store import OrderStore
from order_execution.orders.store_queries import OrderPage
from order_execution.service_layer.kill_switch import cancel_enqueue, request_cancel
from order_execution.tasks.messages import cancel_order_push

_cancel_message = cancel_enqueue(cancel_order_push)


async def owned_order(store: OrderStore, order_id: str, caller: Caller | None) -> Order:
    """The stored order; raises OrderNotFound if there is none, it is another caller's, or it
    is on an account the caller may not trade. The id's shape is the caller's to check first
    (the intake does, `gateway.validation.check_order_id`)."""
    order = await store.get(order_id)
    if caller is not None and (order.owner != caller.name or not caller.may_trade(order.account)):
        raise OrderNotFound(order_id)
    return order


async def list_orders(
    command: ListOrders, caller: Caller | None, *, store: OrderStore, scan_cap: int
) -> OrderPage:
    """Orders newest first (the caller's own only, on the command's `accounts`), filtered; see
    `OrderStore.search`.

    Reads at most `scan_cap` orders, so a rare filter may answer a short or empty page with a
    `next_page_token` (only an empty token means the end).
    """
    return await store.search(
        symbol=command.symbol,
        states=command.states,
        start_ms=command.start_ms,
        end_ms=command.end_ms,
        limit=command.limit or DEFAULT_PAGE,
        page_token=command.page_token,
        owner=caller.name if caller is not None else None,
        accounts=command.accounts,
        scan_cap=scan_cap,
    )


async def cancel_order(command: CancelOrder, caller: Caller | None, *, store: OrderStore) -> Order:
    """Cancel an order: locally if it is still NEW, else at the exchange through a worker.

    Returns the order as it is now (CANCELED, or PENDING_CANCEL while the exchange answers).
    Raises OrderNotFound (also for another caller's order), InvalidOrder (symbol mismatch) or
    OrderNotCancelable (already final).
    """
    order = await owned_order(store, command.order_id, caller)
    if command.symbol and command.symbol != order.symbol:
        raise InvalidOrder("symbol", f"does not match the order's symbol {order.symbol}")
    result = await store.transition(command.order_id, request_cancel, enqueue=_cancel_message)
    if not result.changed and result.order.state in fsm.FINAL_STATES:
        raise OrderNotCancelable(f"order {command.order_id} is {result.order.state}; nothing to cancel")
    return result.order
