"""Conditional order kinds at the gateway: which fields each kind takes, and their rules.

STOP_MARKET, STOP, TAKE_PROFIT, TAKE_PROFIT_MARKET and TRAILING_STOP_MARKET go to the
exchange's algo service and wait there for their trigger. Per kind:

* STOP_MARKET, TAKE_PROFIT_MARKET — `trigger_price`; `quantity`, or `close_position`
  (then no quantity and no reduce_only); no `price`, `time_in_force` or `post_only`;
* STOP, TAKE_PROFIT — `trigger_price`, `price`, `quantity`; `time_in_force` GTC (default),
  IOC, FOK or GTX; price x quantity reaches MIN_NOTIONAL;
* TRAILING_STOP_MARKET — `callback_rate` 0.1-10 (percent, one decimal), `quantity`,
  optional `activation_price`; no `trigger_price` (the trail decides).

Every kind takes `working_type` (CONTRACT_PRICE when unset) and `price_protect`; prices
fit the symbol's PRICE_FILTER. LIMIT and MARKET orders take none of these fields.
Errors are InvalidOrder naming the field and the rule.
"""

from __future__ import annotations

from decimal import Decimal

from gateway.proto_mapping import TIF_FROM_PB, WORKING_TYPE_FROM_PB
from gateway.validation import (
    MAX_DECIMAL_CHARS,
    check_length,
    check_order_size,
    new_order,
    parse_request_decimal,
    quote,
)
from orders.errors import InvalidOrder
from orders.exact import is_multiple, product
from orders.model import Order, OrderType, TimeInForce, WorkingType
from orders.rules import SymbolRules
from proto import order_pb2 as pb
from runtime.settings import RiskSettings

MIN_CALLBACK_RATE = Decimal("0.1")
MAX_CALLBACK_RATE = Decimal("10")
CALLBACK_RATE_STEP = Decimal("0.1")
CONDITIONAL_KINDS = "STOP_MARKET, STOP, TAKE_PROFIT, TAKE_PROFIT_MARKET or TRAILING_STOP_MARKET"
_MARKET_KINDS = (OrderType.STOP_MARKET, OrderType.TAKE_PROFIT_MARKET)


def check_conditional_text(req: pb.CreateOrderRequest) -> None:
    """Bound the conditional fields' strings before anything parses them."""
    for field in ("trigger_price", "callback_rate", "activation_price"):
        check_length(field, getattr(req, field), MAX_DECIMAL_CHARS)


def check_plain_order(req: pb.CreateOrderRequest) -> None:
    """A LIMIT or MARKET order sets none of the conditional fields; raises InvalidOrder naming one."""
    check_conditional_text(req)
    for field in ("trigger_price", "callback_rate", "activation_price"):
        if getattr(req, field).strip():
            raise InvalidOrder(field, f"applies to conditional orders only ({CONDITIONAL_KINDS})")
    if req.working_type != pb.WORKING_TYPE_UNSPECIFIED:
        raise InvalidOrder("working_type", f"applies to conditional orders only ({CONDITIONAL_KINDS})")
    for flag in ("price_protect", "close_position"):
        if getattr(req, flag):
            raise InvalidOrder(flag, f"applies to conditional orders only ({CONDITIONAL_KINDS})")


def build_conditional_order(
    req: pb.CreateOrderRequest, order_type: OrderType, rules: SymbolRules, risk: RiskSettings
) -> Order:
    """Validate a conditional CreateOrderRequest (symbol and side already checked) and return
    the NEW order it describes; raises InvalidOrder or RiskLimitExceeded naming the field."""
    check_conditional_text(req)
    if req.post_only:
        raise InvalidOrder("post_only", "applies to LIMIT orders only (use time_in_force GTX for STOP)")
    trailing = order_type is OrderType.TRAILING_STOP_MARKET
    trigger = _trigger_price(req, order_type, rules)
    price, tif = _limit_terms(req, order_type, rules)
    quantity = _quantity(req, order_type, rules)
    callback, activation = _trailing_terms(req, order_type, rules)
    if req.close_position and order_type not in _MARKET_KINDS:
        raise InvalidOrder("close_position", "applies to STOP_MARKET and TAKE_PROFIT_MARKET only")
    # The price the order will trade near: its limit, else its trigger (a trailing stop's activation).
    reference = price or trigger or activation
    if quantity and reference:
        if order_type.has_limit_price:
            rules.check_notional(reference, quantity, reduce_only=req.reduce_only)
        # The trigger or limit price stands in for the price it will trade at.
        check_order_size(product("quantity", reference, quantity), quantity, risk)
    elif quantity:
        check_order_size(None, quantity, risk)
    return new_order(
        req,
        order_type,
        quantity,
        price,
        tif,
        trigger_price=None if trailing else trigger,
        working_type=_working_type(req),
        price_protect=req.price_protect,
        close_position=req.close_position,
        callback_rate=callback,
        activation_price=activation,
    )


def _trigger_price(req: pb.CreateOrderRequest, order_type: OrderType, rules: SymbolRules) -> Decimal | None:
    if order_type is OrderType.TRAILING_STOP_MARKET:
        if req.trigger_price.strip():
            raise InvalidOrder(
                "trigger_price",
                "must be empty for TRAILING_STOP_MARKET (it triggers on callback_rate; see activation_price)",
            )
        return None
    if not req.trigger_price.strip():
        raise InvalidOrder("trigger_price", f"is required for {order_type} orders")
    trigger = parse_request_decimal("trigger_price", req.trigger_price)
    _check_on_filter("trigger_price", trigger, rules)
    return trigger


def _limit_terms(
    req: pb.CreateOrderRequest, order_type: OrderType, rules: SymbolRules
) -> tuple[Decimal | None, TimeInForce | None]:
    if not order_type.has_limit_price:
        if req.price.strip():
            raise InvalidOrder(
                "price", f"must be empty for {order_type} orders (they trigger a MARKET order)"
            )
        if req.time_in_force != pb.TIF_UNSPECIFIED:
            raise InvalidOrder("time_in_force", f"must be unset for {order_type} orders")
        return None, None
    if not req.price.strip():
        raise InvalidOrder("price", f"is required for {order_type} orders (the LIMIT price once triggered)")
    price = parse_request_decimal("price", req.price)
    rules.check_price(price)
    if req.time_in_force == pb.TIF_UNSPECIFIED:
        return price, TimeInForce.GTC
    if req.time_in_force not in TIF_FROM_PB:
        raise InvalidOrder(
            "time_in_force", f"unknown value {req.time_in_force} (expected GTC, IOC, FOK or GTX)"
        )
    return price, TIF_FROM_PB[req.time_in_force]


def _quantity(req: pb.CreateOrderRequest, order_type: OrderType, rules: SymbolRules) -> Decimal:
    """The order's quantity; 0 for a close_position order, which closes whatever is open."""
    if req.close_position:
        if req.quantity.strip():
            raise InvalidOrder("quantity", "must be empty with close_position (it closes the whole position)")
        if req.reduce_only:
            raise InvalidOrder("reduce_only", "cannot be combined with close_position")
        return Decimal(0)
    quantity = parse_request_decimal("quantity", req.quantity)
    rules.check_quantity(quantity, OrderType.LIMIT if order_type.has_limit_price else OrderType.MARKET)
    return quantity


def _trailing_terms(
    req: pb.CreateOrderRequest, order_type: OrderType, rules: SymbolRules
) -> tuple[Decimal | None, Decimal | None]:
    if order_type is not OrderType.TRAILING_STOP_MARKET:
        for field in ("callback_rate", "activation_price"):
            if getattr(req, field).strip():
                raise InvalidOrder(field, "applies to TRAILING_STOP_MARKET orders only")
        return None, None
    if not req.callback_rate.strip():
        raise InvalidOrder("callback_rate", "is required for TRAILING_STOP_MARKET (percent, 0.1-10)")
    callback = parse_request_decimal("callback_rate", req.callback_rate)
    if not MIN_CALLBACK_RATE <= callback <= MAX_CALLBACK_RATE or not is_multiple(
        "callback_rate", callback, CALLBACK_RATE_STEP
    ):
        raise InvalidOrder(
            "callback_rate", f"must be 0.1-10 in steps of 0.1 (percent), got {quote(req.callback_rate)}"
        )
    activation = None
    if req.activation_price.strip():
        activation = parse_request_decimal("activation_price", req.activation_price)
        _check_on_filter("activation_price", activation, rules)
    return callback, activation


def _working_type(req: pb.CreateOrderRequest) -> WorkingType | None:
    if req.working_type == pb.WORKING_TYPE_UNSPECIFIED:
        return None
    if req.working_type not in WORKING_TYPE_FROM_PB:
        raise InvalidOrder(
            "working_type", f"unknown value {req.working_type} (expected CONTRACT_PRICE or MARK_PRICE)"
        )
    return WORKING_TYPE_FROM_PB[req.working_type]


def _check_on_filter(field: str, value: Decimal, rules: SymbolRules) -> None:
    """PRICE_FILTER for a price other than `price`; the error names `field`."""
    try:
        rules.check_price(value)
    except InvalidOrder as exc:
        raise InvalidOrder(field, exc.rule) from exc
