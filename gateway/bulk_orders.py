"""CreateOrders (batch create) and CancelAllOrders, on top of the order desk.

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

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.auth import Caller
from gateway.desk import OrderDesk
from gateway.validation import check_symbol_text
from orders import fsm
from orders.errors import InvalidOrder, OrderServiceError
from orders.model import Order, OrderState
from orders.store import CreateResult, QueuePush
from proto import order_pb2 as pb
from tasks.messages import cancel_all_push, cancel_order_push

S = OrderState
MAX_BATCH_ITEMS = 20
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


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One batch item's outcome: `created` (the CreateOrder answer) or `error`."""

    created: CreateResult | None = None
    error: OrderServiceError | None = None


async def create_many(
    desk: OrderDesk,
    requests: Sequence[pb.CreateOrderRequest],
    client: str = "",
    caller: Caller | None = None,
) -> list[ItemResult]:
    """Create each of 1-20 orders as CreateOrder would; results in request order.

    Raises InvalidOrder (field `orders`) for an empty or oversized batch; an item's own
    error is its result, not raised.
    """
    if not requests:
        raise InvalidOrder("orders", "must hold at least one order")
    if len(requests) > MAX_BATCH_ITEMS:
        raise InvalidOrder("orders", f"at most {MAX_BATCH_ITEMS} orders per call, got {len(requests)}")
    results: list[ItemResult] = []
    for request in requests:
        try:
            results.append(ItemResult(created=await desk.create(request, client, caller)))
        except OrderServiceError as exc:
            results.append(ItemResult(error=exc))
    return results


async def cancel_all(
    desk: OrderDesk, symbol: str, client: str = "", caller: Caller | None = None
) -> list[Order]:
    """Cancel every open order of ours (the caller's, with auth on) in `symbol`; returns those moved.

    Raises InvalidOrder for a malformed symbol, Overloaded for the client's request rate.
    """
    if not symbol:
        raise InvalidOrder("symbol", "is required, e.g. BTCUSDT")
    check_symbol_text("symbol", symbol)
    desk.admit(caller, client)
    per_order = caller is not None

    def cancel_now(current: Order) -> Order | None:
        if current.state is S.NEW:
            return fsm.transition(current, S.CANCELED, reason="canceled before it was sent (cancel-all)")
        return fsm.transition(current, S.PENDING_CANCEL)

    def cancel_message(updated: Order) -> QueuePush | None:
        return cancel_order_push(updated) if per_order and updated.state is S.PENDING_CANCEL else None

    moved: list[Order] = []
    async for batch in desk.store.unsettled_orders(batch=desk.list_scan_cap):
        for order in batch:
            if order.symbol != symbol or order.state not in OPEN_STATES:
                continue
            if caller is not None and order.owner != caller.name:
                continue
            result = await desk.store.transition(
                order.order_id, cancel_now, enqueue=cancel_message, current=order
            )
            if result.changed:
                moved.append(result.order)
    if not per_order:
        await desk.store.enqueue(cancel_all_push(symbol))
    elif not moved:  # a retry that finds its moves made: answer once the replicas hold them
        await desk.store.confirm_replicated()
    return moved
