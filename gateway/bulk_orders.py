"""The handlers of CreateOrders (batch create) and CancelAllOrders.

A batch is handled item by item, each exactly as CreateOrder handles it (validation,
admission, idempotency on its client_order_id), so one failing item fails only itself.
Workers send the items one by one, as they send single orders: see the README on why
batches are not merged into `POST /fapi/v1/batchOrders`.

Cancel-all moves every open order of ours in a symbol: NEW ones to CANCELED at once, the
others to PENDING_CANCEL. It finds them among the account's unsettled orders (every open
order is one; `server.list_scan_cap` read at a time, so memory holds one batch), never in
the 30-day index of every order. With authentication off (one owner of the whole exchange
account) one worker message then cancels everything of the symbol at the exchange
(`DELETE allOpenOrders` and `algoOpenOrders`); with it on, each order gets its own cancel
message, since the exchange-wide call would also cancel other clients' orders.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from order_execution.gateway.accounts import in_scope
from order_execution.gateway.auth import Caller
from order_execution.gateway.commands import CancelAll, PlaceBatch, PlaceOrder
from order_execution.orders import fsm
from order_execution.orders.errors import OrderServiceError
from order_execution.orders.model import Order, OrderState
from order_execution.orders.store import CreateResult, OrderStore, QueuePush
from order_execution.tasks.messages import cancel_all_push, cancel_order_push

S = OrderState
# Orders that may still be working at the exchange (or not yet sent).
OPEN_STATES = (
    S.NEW,
    S.SUBMITTING,
    S.SUBMITTED,
    S.PARTIALLY_FILLED,
    S.UNKNOWN,
    S.WAITING_TRIGGER,
    S.TRIGGERED,
)


async def place_batch(
    command: PlaceBatch, place: Callable[[PlaceOrder], Awaitable[CreateResult]]
) -> list[CreateResult | OrderServiceError]:
    """Place each of the batch's orders with `place` (the intake's PlaceOrder, checked and
    admitted like a single CreateOrder); results in request order, an item's error its result."""
    results: list[CreateResult | OrderServiceError] = []
    for item in command.orders:
        try:
            results.append(await place(item))
        except OrderServiceError as exc:
            results.append(exc)
    return results


async def cancel_all(
    command: CancelAll,
    caller: Caller | None,
    *,
    store: OrderStore,
    scan_cap: int,
    accounts: Sequence[str],
) -> list[Order]:
    """Cancel every open order of ours (the caller's, with auth on) in the command's symbol on
    the command's `accounts`; returns those moved. Reads `scan_cap` unsettled orders at a time.

    `accounts` are the configured accounts the command covers: with auth off each gets its
    exchange-wide cancel message."""
    symbol = command.symbol
    per_order = caller is not None

    def cancel_now(current: Order) -> Order | None:
        if current.state is S.NEW:
            return fsm.transition(current, S.CANCELED, reason="canceled before it was sent (cancel-all)")
        return fsm.transition(current, S.PENDING_CANCEL)

    def cancel_message(updated: Order) -> QueuePush | None:
        return cancel_order_push(updated) if per_order and updated.state is S.PENDING_CANCEL else None

    moved: list[Order] = []
    async for batch in store.unsettled_orders(batch=scan_cap):
        for order in batch:
            if order.symbol != symbol or order.state not in OPEN_STATES:
                continue
            if caller is not None and order.owner != caller.name:
                continue
            if not in_scope(command.accounts, order.account):
                continue
            result = await store.transition(order.order_id, cancel_now, enqueue=cancel_message, current=order)
            if result.changed:
                moved.append(result.order)
    if not per_order:
        for account in accounts:
            await store.enqueue(cancel_all_push(symbol, account))
    elif not moved:  # a retry that finds its moves made: answer once the replicas hold them
        await store.confirm_replicated()
    return moved
