"""Turn a PlaceOrder into the NEW Order it describes, or say exactly which field breaks which rule.

Checks the symbol (known, allowed, trading), the side and type, then the kind's terms:
LIMIT and MARKET here, the conditional kinds in `gateway.order_kinds`; each against the
symbol's exchange filters (tick, step, min/max, min notional) with Decimal arithmetic and
our per-order risk limits. Nothing is stored until this has passed. The command's strings
were bounded at intake (`gateway.validation.check_create_text`, before admission).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import uuid4

from order_execution.gateway.commands import UNSET, PlaceOrder
from order_execution.gateway.order_kinds import CONDITIONAL_KINDS, check_plain_order, conditional_terms
from order_execution.gateway.validation import (
    check_order_size,
    check_symbol_text,
    enum_rule,
    parse_request_decimal,
    request_client_order_id,
)
from order_execution.orders.errors import InvalidOrder, RiskLimitExceeded
from order_execution.orders.exact import product
from order_execution.orders.model import Order, OrderType, Side, TimeInForce
from order_execution.orders.rules import SymbolRules
from order_execution.runtime.settings import RiskSettings


def build_order(command: PlaceOrder, rules: dict[str, SymbolRules], risk: RiskSettings) -> Order:
    """Validate `command` and return the NEW order it describes (a fresh order id).

    Raises InvalidOrder (or RiskLimitExceeded) naming the first field that breaks a rule.
    `risk` is the limits in force; MARKET notional and the mark-price checks are
    `gateway.risk`'s, the counting limits the order store's.
    """
    symbol_rules = _check_symbol(command.symbol, rules, risk)
    if not isinstance(command.side, Side):
        raise InvalidOrder("side", enum_rule(command.side, "BUY or SELL"))
    if not isinstance(command.type, OrderType):
        raise InvalidOrder("type", enum_rule(command.type, f"LIMIT, MARKET, {CONDITIONAL_KINDS}"))
    if command.type.is_conditional:
        terms = conditional_terms(command, command.type, symbol_rules, risk)
    else:
        check_plain_order(command)
        terms = _plain_terms(command, command.type, symbol_rules, risk)
    return Order(
        order_id=str(uuid4()),
        client_order_id=request_client_order_id(command),
        symbol=command.symbol,
        side=command.side,
        type=command.type,
        reduce_only=command.reduce_only,
        user_id=command.user_id,
        **terms,
    )


def _plain_terms(
    command: PlaceOrder, order_type: OrderType, rules: SymbolRules, risk: RiskSettings
) -> dict[str, Any]:
    """A LIMIT or MARKET order's quantity, price, time in force and post_only."""
    quantity = parse_request_decimal("quantity", command.quantity)
    rules.check_quantity(quantity, order_type)
    price: Decimal | None = None
    tif: TimeInForce | None = None
    if order_type is OrderType.LIMIT:
        price = parse_request_decimal("price", command.price)
        rules.check_price(price)
        tif = _limit_time_in_force(command)
        rules.check_notional(price, quantity, reduce_only=command.reduce_only)
        check_order_size(product("quantity", price, quantity), quantity, risk)
    else:
        if command.price.strip():
            raise InvalidOrder("price", "must be empty for MARKET orders")
        if command.time_in_force != UNSET:
            raise InvalidOrder("time_in_force", "must be unset for MARKET orders")
        if command.post_only:
            raise InvalidOrder("post_only", "applies to LIMIT orders only")
        check_order_size(None, quantity, risk)
    return {"quantity": quantity, "price": price, "time_in_force": tif, "post_only": command.post_only}


def _check_symbol(symbol: str, rules: dict[str, SymbolRules], risk: RiskSettings) -> SymbolRules:
    if not symbol:
        raise InvalidOrder("symbol", "is required, e.g. BTCUSDT")
    check_symbol_text("symbol", symbol)
    found = rules.get(symbol)
    if found is None:
        raise InvalidOrder(
            "symbol",
            f"{symbol} is not traded here (not in the `symbols` setting, or not listed by the exchange)",
        )
    if risk.allowed_symbols and symbol not in risk.allowed_symbols:
        raise RiskLimitExceeded(
            "symbol",
            f"{symbol} is not traded here (allowed: {', '.join(risk.allowed_symbols)}; risk.allowed_symbols)",
            limit="allowed_symbols",
        )
    if found.status != "TRADING":
        raise InvalidOrder("symbol", f"{symbol} is not trading (status {found.status})")
    return found


def _limit_time_in_force(command: PlaceOrder) -> TimeInForce:
    if command.time_in_force == UNSET:
        if command.post_only:
            return TimeInForce.GTX
        raise InvalidOrder("time_in_force", "is required for LIMIT orders (GTC, IOC, FOK or GTX)")
    if not isinstance(command.time_in_force, TimeInForce):
        raise InvalidOrder("time_in_force", enum_rule(command.time_in_force, "GTC, IOC, FOK or GTX"))
    tif = command.time_in_force
    if command.post_only and tif not in (TimeInForce.GTX, TimeInForce.GTC):
        raise InvalidOrder("time_in_force", f"post_only orders rest as GTX; {tif} cannot be post-only")
    return tif
