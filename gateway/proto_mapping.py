"""Mapping between the domain Order and the `order` protobuf messages.

Unspecified enums never map to a default: the gateway rejects them before this runs.
"""

from __future__ import annotations

from decimal import Decimal

from orders.model import Fill, Order, OrderState, OrderType, Side, TimeInForce, WorkingType, decimal_str
from proto import order_pb2 as pb

SIDE_FROM_PB = {pb.BUY: Side.BUY, pb.SELL: Side.SELL}
TYPE_FROM_PB = {
    pb.LIMIT: OrderType.LIMIT,
    pb.MARKET: OrderType.MARKET,
    pb.STOP_MARKET: OrderType.STOP_MARKET,
    pb.STOP: OrderType.STOP,
    pb.TAKE_PROFIT: OrderType.TAKE_PROFIT,
    pb.TAKE_PROFIT_MARKET: OrderType.TAKE_PROFIT_MARKET,
    pb.TRAILING_STOP_MARKET: OrderType.TRAILING_STOP_MARKET,
}
WORKING_TYPE_FROM_PB = {pb.CONTRACT_PRICE: WorkingType.CONTRACT_PRICE, pb.MARK_PRICE: WorkingType.MARK_PRICE}
TIF_FROM_PB = {
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
STATE_FROM_PB = {v: k for k, v in STATE_TO_PB.items()}
_SIDE_TO_PB = {v: k for k, v in SIDE_FROM_PB.items()}
_TYPE_TO_PB = {v: k for k, v in TYPE_FROM_PB.items()}
_TIF_TO_PB = {v: k for k, v in TIF_FROM_PB.items()}
_WORKING_TYPE_TO_PB = {v: k for k, v in WORKING_TYPE_FROM_PB.items()}


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
