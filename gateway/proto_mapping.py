"""Mapping between the `order` protobuf messages and the gateway's commands and the domain Order.

Requests become commands (`gateway.commands`) here, the only place besides the servicers
that reads protobuf. An enum value with no domain meaning is kept as its number for the
handlers to refuse (naming the field); a ListOrders state is the one refused here.
"""

from __future__ import annotations

from decimal import Decimal

from order_execution.gateway.commands import (
    AmendOrder,
    CancelAll,
    CancelOrder,
    GetOrder,
    ListOrders,
    PlaceBatch,
    PlaceOrder,
    WatchOrders,
)
from order_execution.orders.errors import InvalidOrder
from order_execution.orders.model import (
    Fill,
    Order,
    OrderState,
    OrderType,
    Side,
    TimeInForce,
    WorkingType,
    decimal_str,
)
from order_execution.proto import order_pb2 as pb

_SIDE_FROM_PB = {pb.BUY: Side.BUY, pb.SELL: Side.SELL}
_TYPE_FROM_PB = {
    pb.LIMIT: OrderType.LIMIT,
    pb.MARKET: OrderType.MARKET,
    pb.STOP_MARKET: OrderType.STOP_MARKET,
    pb.STOP: OrderType.STOP,
    pb.TAKE_PROFIT: OrderType.TAKE_PROFIT,
    pb.TAKE_PROFIT_MARKET: OrderType.TAKE_PROFIT_MARKET,
    pb.TRAILING_STOP_MARKET: OrderType.TRAILING_STOP_MARKET,
}
_WORKING_TYPE_FROM_PB = {pb.CONTRACT_PRICE: WorkingType.CONTRACT_PRICE, pb.MARK_PRICE: WorkingType.MARK_PRICE}
_TIF_FROM_PB = {
    pb.GTC: TimeInForce.GTC,
    pb.IOC: TimeInForce.IOC,
    pb.FOK: TimeInForce.FOK,
    pb.GTX: TimeInForce.GTX,
}
STATE_TO_PB: dict[OrderState, pb.OrderState.ValueType] = {
    OrderState.NEW: pb.NEW,
    OrderState.SUBMITTING: pb.SUBMITTING,
    OrderState.SUBMITTED: pb.SUBMITTED,
    OrderState.PARTIALLY_FILLED: pb.PARTIALLY_FILLED,
    OrderState.FILLED: pb.FILLED,
    OrderState.PENDING_CANCEL: pb.PENDING_CANCEL,
    OrderState.CANCELED: pb.CANCELED,
    OrderState.REJECTED: pb.REJECTED,
    OrderState.EXPIRED: pb.EXPIRED,
    OrderState.UNKNOWN: pb.UNKNOWN,
    OrderState.WAITING_TRIGGER: pb.WAITING_TRIGGER,
    OrderState.TRIGGERED: pb.TRIGGERED,
}
_STATE_FROM_PB = {v: k for k, v in STATE_TO_PB.items()}
_SIDE_TO_PB = {v: k for k, v in _SIDE_FROM_PB.items()}
_TYPE_TO_PB = {v: k for k, v in _TYPE_FROM_PB.items()}
_TIF_TO_PB = {v: k for k, v in _TIF_FROM_PB.items()}
_WORKING_TYPE_TO_PB = {v: k for k, v in _WORKING_TYPE_FROM_PB.items()}


def _optional(value: Decimal | None) -> str:
    return decimal_str(value) if value is not None else ""


def order_to_pb(order: Order) -> pb.Order:
    return pb.Order(
        order_id=order.order_id,
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=_SIDE_TO_PB[order.side],
        type=_TYPE_TO_PB[order.type],
        state=STATE_TO_PB[order.state],
        time_in_force=_TIF_TO_PB[order.time_in_force] if order.time_in_force else pb.TIF_UNSPECIFIED,
        quantity=decimal_str(order.quantity),
        price=decimal_str(order.price) if order.price is not None else "",
        filled_quantity=decimal_str(order.filled_quantity),
        average_price=decimal_str(order.average_price),
        fee=decimal_str(order.fee),
        fee_asset=order.fee_asset,
        created_at=order.created_at,
        updated_at=order.updated_at,
        user_id=order.user_id,
        reduce_only=order.reduce_only,
        post_only=order.post_only,
        exchange_order_id=order.exchange_order_id,
        version=order.version,
        reject_reason=order.reject_reason,
        fills=[fill_to_pb(f) for f in order.fills],
        trigger_price=_optional(order.trigger_price),
        working_type=_WORKING_TYPE_TO_PB[order.working_type]
        if order.working_type
        else pb.WORKING_TYPE_UNSPECIFIED,
        price_protect=order.price_protect,
        close_position=order.close_position,
        callback_rate=_optional(order.callback_rate),
        activation_price=_optional(order.activation_price),
        algo_id=order.algo_id,
        account=order.account,
    )


def fill_to_pb(fill: Fill) -> pb.Fill:
    return pb.Fill(
        trade_id=fill.trade_id,
        quantity=decimal_str(fill.quantity),
        price=decimal_str(fill.price),
        fee=decimal_str(fill.fee),
        fee_asset=fill.fee_asset,
        maker=fill.maker,
        time=fill.time,
    )


def update_to_pb(
    order: Order, *, update_type: str = "", fills: tuple[Fill, ...] = (), resume_token: str = ""
) -> pb.OrderUpdate:
    """One stream update: the order as it became, what happened, its trades, its resume token."""
    return pb.OrderUpdate(
        order=order_to_pb(order),
        update_type=update_type or str(order.state),
        timestamp=order.updated_at or order.created_at,
        resume_token=resume_token,
        fills=[fill_to_pb(f) for f in fills],
    )


def place_order_from_pb(req: pb.CreateOrderRequest) -> PlaceOrder:
    """The PlaceOrder a CreateOrderRequest asks for; fields as sent (checked by its handler)."""
    return PlaceOrder(
        symbol=req.symbol,
        side=_SIDE_FROM_PB.get(req.side, req.side),
        type=_TYPE_FROM_PB.get(req.type, req.type),
        quantity=req.quantity,
        price=req.price,
        time_in_force=_TIF_FROM_PB.get(req.time_in_force, req.time_in_force),
        client_order_id=req.client_order_id,
        reduce_only=req.reduce_only,
        post_only=req.post_only,
        user_id=req.user_id,
        trigger_price=req.trigger_price,
        working_type=_WORKING_TYPE_FROM_PB.get(req.working_type, req.working_type),
        price_protect=req.price_protect,
        close_position=req.close_position,
        callback_rate=req.callback_rate,
        activation_price=req.activation_price,
        account=req.account,
    )


def place_batch_from_pb(req: pb.CreateOrdersRequest) -> PlaceBatch:
    """Each item as CreateOrder's; `account` is the batch's, for the items that name none."""
    return PlaceBatch(orders=tuple(place_order_from_pb(item) for item in req.orders), account=req.account)


def cancel_order_from_pb(req: pb.CancelOrderRequest) -> CancelOrder:
    return CancelOrder(order_id=req.order_id, symbol=req.symbol)


def cancel_all_from_pb(req: pb.CancelAllOrdersRequest) -> CancelAll:
    return CancelAll(symbol=req.symbol, account=req.account)


def amend_order_from_pb(req: pb.AmendOrderRequest) -> AmendOrder:
    return AmendOrder(order_id=req.order_id, price=req.price, quantity=req.quantity)


def get_order_from_pb(req: pb.GetOrderRequest) -> GetOrder:
    return GetOrder(order_id=req.order_id)


def list_orders_from_pb(req: pb.ListOrdersRequest) -> ListOrders:
    """Raises InvalidOrder (field `state`) for a state number with no meaning; unset lists all."""
    if req.state != pb.STATE_UNSPECIFIED and req.state not in _STATE_FROM_PB:
        raise InvalidOrder("state", f"unknown value {req.state}")
    return ListOrders(
        symbol=req.symbol,
        states=(_STATE_FROM_PB[req.state],) if req.state in _STATE_FROM_PB else (),
        start_ms=req.start_time,
        end_ms=req.end_time,
        limit=req.limit,
        page_token=req.page_token,
        account=req.account,
    )


def watch_orders_from_pb(req: pb.StreamOrderUpdatesRequest) -> WatchOrders:
    return WatchOrders(
        symbols=tuple(req.symbols), user_id=req.user_id, resume_token=req.resume_token, account=req.account
    )
