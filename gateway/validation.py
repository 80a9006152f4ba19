"""Turn a CreateOrderRequest into an Order, or say exactly which field breaks which rule.

Checks the request's shape, the symbol's exchange filters (tick, step, min/max,
min notional) with Decimal arithmetic, and our risk limits. Nothing is stored until
this has passed.
"""

from __future__ import annotations

import re
from decimal import Decimal
from uuid import uuid4

from orders.errors import InvalidOrder, RiskLimitExceeded
from orders.model import Order, OrderType, TimeInForce, decimal_str
from orders.proto_mapping import SIDE_FROM_PB, TIF_FROM_PB, TYPE_FROM_PB
from orders.rules import SymbolRules, parse_decimal
from orders.settings import RiskSettings
from proto import order_pb2 as pb

CLIENT_ORDER_ID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
_SYMBOL = re.compile(r"^[A-Z0-9]{2,30}$")


def mint_client_order_id() -> str:
    """A fresh Binance newClientOrderId: 'oe-' + 32 hex digits (35 characters)."""
    return f"oe-{uuid4().hex}"


def build_order(req: pb.CreateOrderRequest, rules: dict[str, SymbolRules], risk: RiskSettings) -> Order:
    """Validate `req` and return the NEW order it describes.

    Raises InvalidOrder (or RiskLimitExceeded) naming the first field that breaks a rule.
    """
    symbol_rules = _check_symbol(req.symbol, rules, risk)
    if req.side not in SIDE_FROM_PB:
        raise InvalidOrder("side", _enum_rule(req.side, "BUY or SELL"))
    if req.type not in TYPE_FROM_PB:
        raise InvalidOrder("type", _enum_rule(req.type, "LIMIT or MARKET"))
    order_type = TYPE_FROM_PB[req.type]
    quantity = parse_decimal("quantity", req.quantity)
    symbol_rules.check_quantity(quantity, order_type)

    price: Decimal | None = None
    tif: TimeInForce | None = None
    if order_type is OrderType.LIMIT:
        price = parse_decimal("price", req.price)
        symbol_rules.check_price(price)
        tif = _limit_time_in_force(req)
        symbol_rules.check_notional(price, quantity, reduce_only=req.reduce_only)
        _check_risk(price * quantity, quantity, risk)
    else:
        if req.price.strip():
            raise InvalidOrder("price", "must be empty for MARKET orders")
        if req.time_in_force != pb.TIF_UNSPECIFIED:
            raise InvalidOrder("time_in_force", "must be unset for MARKET orders")
        if req.post_only:
            raise InvalidOrder("post_only", "applies to LIMIT orders only")
        _check_risk(None, quantity, risk)

    client_order_id = req.client_order_id or mint_client_order_id()
    if not CLIENT_ORDER_ID.match(client_order_id):
        raise InvalidOrder("client_order_id", "must be 1-36 characters of [.A-Z:/a-z0-9_-]")
    return Order(
        order_id=str(uuid4()),
        client_order_id=client_order_id,
        symbol=req.symbol,
        side=SIDE_FROM_PB[req.side],
        type=order_type,
        quantity=quantity,
        price=price,
        time_in_force=tif,
        reduce_only=req.reduce_only,
        post_only=req.post_only,
        user_id=req.user_id,
    )


def _check_symbol(symbol: str, rules: dict[str, SymbolRules], risk: RiskSettings) -> SymbolRules:
    if not symbol:
        raise InvalidOrder("symbol", "is required, e.g. BTCUSDT")
    if not _SYMBOL.match(symbol):
        raise InvalidOrder("symbol", f"must be upper-case letters and digits, got {symbol!r}")
    if risk.allowed_symbols and symbol not in risk.allowed_symbols:
        raise InvalidOrder(
            "symbol", f"{symbol} is not traded here (allowed: {', '.join(risk.allowed_symbols)})"
        )
    found = rules.get(symbol)
    if found is None:
        raise InvalidOrder(
            "symbol",
            f"{symbol} is not traded here (not in the `symbols` setting, or not listed by the exchange)",
        )
    if found.status != "TRADING":
        raise InvalidOrder("symbol", f"{symbol} is not trading (status {found.status})")
    return found


def _limit_time_in_force(req: pb.CreateOrderRequest) -> TimeInForce:
    if req.time_in_force == pb.TIF_UNSPECIFIED:
        if req.post_only:
            return TimeInForce.GTX
        raise InvalidOrder("time_in_force", "is required for LIMIT orders (GTC, IOC, FOK or GTX)")
    if req.time_in_force not in TIF_FROM_PB:
        raise InvalidOrder("time_in_force", _enum_rule(req.time_in_force, "GTC, IOC, FOK or GTX"))
    tif = TIF_FROM_PB[req.time_in_force]
    if req.post_only and tif not in (TimeInForce.GTX, TimeInForce.GTC):
        raise InvalidOrder("time_in_force", f"post_only orders rest as GTX; {tif} cannot be post-only")
    return tif


def _check_risk(notional: Decimal | None, quantity: Decimal, risk: RiskSettings) -> None:
    if risk.max_order_quantity and quantity > risk.max_order_quantity:
        raise RiskLimitExceeded(
            "quantity", f"must be at most {decimal_str(risk.max_order_quantity)} (risk.max_order_quantity)"
        )
    if notional is not None and notional > risk.max_order_notional:
        raise RiskLimitExceeded(
            "quantity",
            f"price x quantity = {decimal_str(notional)} exceeds "
            f"{decimal_str(risk.max_order_notional)} (risk.max_order_notional)",
        )


def _enum_rule(value: int, allowed: str) -> str:
    if value == 0:
        return f"is required ({allowed})"
    return f"unknown value {value} (expected {allowed})"
