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
Errors are InvalidOrder naming the field and the rule. `gateway.order_builder` calls this
module and builds the Order; the fields' lengths were bounded at intake (`check_create_text`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from order_execution.gateway.commands import UNSET, PlaceOrder
from order_execution.gateway.validation import check_order_size, parse_request_decimal, quote
from order_execution.orders.errors import InvalidOrder
from order_execution.orders.exact import is_multiple, product
from order_execution.orders.model import OrderType, TimeInForce, WorkingType
from order_execution.orders.rules import SymbolRules
from order_execution.runtime.settings import RiskSettings

MIN_CALLBACK_RATE = Decimal("0.1")
MAX_CALLBACK_RATE = Decimal("10")
CALLBACK_RATE_STEP = Decimal("0.1")
CONDITIONAL_KINDS = "STOP_MARKET, STOP, TAKE_PROFIT, TAKE_PROFIT_MARKET or TRAILING_STOP_MARKET"
_MARKET_KINDS = (OrderType.STOP_MARKET, OrderType.TAKE_PROFIT_MARKET)


def check_plain_order(command: PlaceOrder) -> None:
    """A LIMIT or MARKET order sets none of the conditional fields; raises InvalidOrder naming one."""
    for field in ("trigger_price", "callback_rate", "activation_price"):
        if getattr(command, field).strip():
            raise InvalidOrder(field, f"applies to conditional orders only ({CONDITIONAL_KINDS})")
    if command.working_type != UNSET:
        raise InvalidOrder("working_type", f"applies to conditional orders only ({CONDITIONAL_KINDS})")
    for flag in ("price_protect", "close_position"):
        if getattr(command, flag):
            raise InvalidOrder(flag, f"applies to conditional orders only ({CONDITIONAL_KINDS})")


def conditional_terms(
    command: PlaceOrder, order_type: OrderType, rules: SymbolRules, risk: RiskSettings
) -> dict[str, Any]:
    """Validate a conditional PlaceOrder (symbol and side already checked) and return the Order
    fields its kind sets (quantity, price, time_in_force, trigger_price, ...); raises
    InvalidOrder or RiskLimitExceeded naming the field."""
    if command.post_only:
        raise InvalidOrder("post_only", "applies to LIMIT orders only (use time_in_force GTX for STOP)")
    trailing = order_type is OrderType.TRAILING_STOP_MARKET
    trigger = _trigger_price(command, order_type, rules)
    price, tif = _limit_terms(command, order_type, rules)
    quantity = _quantity(command, order_type, rules)
    callback, activation = _trailing_terms(command, order_type, rules)
    if command.close_position and order_type not in _MARKET_KINDS:
        raise InvalidOrder("close_position", "applies to STOP_MARKET and TAKE_PROFIT_MARKET only")
    # The price the order will trade near: its limit, else its trigger (a trailing stop's activation).
    reference = price or trigger or activation
    if quantity and reference:
        if order_type.has_limit_price:
            rules.check_notional(reference, quantity, reduce_only=command.reduce_only)
        # The trigger or limit price stands in for the price it will trade at.
        check_order_size(product("quantity", reference, quantity), quantity, risk)
    elif quantity:
        check_order_size(None, quantity, risk)
    return dict(
        quantity=quantity,
        price=price,
        time_in_force=tif,
        trigger_price=None if trailing else trigger,
        working_type=_working_type(command),
        price_protect=command.price_protect,
        close_position=command.close_position,
        callback_rate=callback,
        activation_price=activation,
    )


def _trigger_price(command: PlaceOrder, order_type: OrderType, rules: SymbolRules) -> Decimal | None:
    if order_type is OrderType.TRAILING_STOP_MARKET:
        if command.trigger_price.strip():
            raise InvalidOrder(
                "trigger_price",
                "must be empty for TRAILING_STOP_MARKET (it triggers on callback_rate; see activation_price)",
            )
        return None
    if not command.trigger_price.strip():
        raise InvalidOrder("trigger_price", f"is required for {order_type} orders")
    trigger = parse_request_decimal("trigger_price", command.trigger_price)
    _check_on_filter("trigger_price", trigger, rules)
    return trigger


def _limit_terms(
    command: PlaceOrder, order_type: OrderType, rules: SymbolRules
) -> tuple[Decimal | None, TimeInForce | None]:
    if not order_type.has_limit_price:
        if command.price.strip():
            raise InvalidOrder(
                "price", f"must be empty for {order_type} orders (they trigger a MARKET order)"
            )
        if command.time_in_force != UNSET:
            raise InvalidOrder("time_in_force", f"must be unset for {order_type} orders")
        return None, None
    if not command.price.strip():
        raise InvalidOrder("price", f"is required for {order_type} orders (the LIMIT price once triggered)")
    price = parse_request_decimal("price", command.price)
    rules.check_price(price)
    if command.time_in_force == UNSET:
        return price, TimeInForce.GTC
    if not isinstance(command.time_in_force, TimeInForce):
        raise InvalidOrder(
            "time_in_force", f"unknown value {command.time_in_force} (expected GTC, IOC, FOK or GTX)"
        )
    return price, command.time_in_force


def _quantity(command: PlaceOrder, order_type: OrderType, rules: SymbolRules) -> Decimal:
    """The order's quantity; 0 for a close_position order, which closes whatever is open."""
    if command.close_position:
        if command.quantity.strip():
            raise InvalidOrder("quantity", "must be empty with close_position (it closes the whole position)")
        if command.reduce_only:
            raise InvalidOrder("reduce_only", "cannot be combined with close_position")
        return Decimal(0)
    quantity = parse_request_decimal("quantity", command.quantity)
    rules.check_quantity(quantity, OrderType.LIMIT if order_type.has_limit_price else OrderType.MARKET)
    return quantity


def _trailing_terms(
    command: PlaceOrder, order_type: OrderType, rules: SymbolRules
) -> tuple[Decimal | None, Decimal | None]:
    if order_type is not OrderType.TRAILING_STOP_MARKET:
        for field in ("callback_rate", "activation_price"):
            if getattr(command, field).strip():
                raise InvalidOrder(field, "applies to TRAILING_STOP_MARKET orders only")
        return None, None
    if not command.callback_rate.strip():
        raise InvalidOrder("callback_rate", "is required for TRAILING_STOP_MARKET (percent, 0.1-10)")
    callback = parse_request_decimal("callback_rate", command.callback_rate)
    if not MIN_CALLBACK_RATE <= callback <= MAX_CALLBACK_RATE or not is_multiple(
        "callback_rate", callback, CALLBACK_RATE_STEP
    ):
        raise InvalidOrder(
            "callback_rate", f"must be 0.1-10 in steps of 0.1 (percent), got {quote(command.callback_rate)}"
        )
    activation = None
    if command.activation_price.strip():
        activation = parse_request_decimal("activation_price", command.activation_price)
        _check_on_filter("activation_price", activation, rules)
    return callback, activation


def _working_type(command: PlaceOrder) -> WorkingType | None:
    if command.working_type == UNSET:
        return None
    if not isinstance(command.working_type, WorkingType):
        raise InvalidOrder(
            "working_type", f"unknown value {command.working_type} (expected CONTRACT_PRICE or MARK_PRICE)"
        )
    return command.working_type


def _check_on_filter(field: str, value: Decimal, rules: SymbolRules) -> None:
    """PRICE_FILTER for a price other than `price`; the error names `field`."""
    try:
        rules.check_price(value)
    except InvalidOrder as exc:
        raise InvalidOrder(field, exc.rule) from exc
