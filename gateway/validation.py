"""Turn a CreateOrderRequest into an Order, or say exactly which field breaks which rule.

Checks the request's shape, the symbol's exchange filters (tick, step, min/max,
min notional) with Decimal arithmetic, and our risk limits. Nothing is stored until
this has passed.

Every string a client sends has a length bound, checked before anything else reads
it, and an error quotes at most a short prefix of a bad value (`quote`): a gRPC status
message travels in a trailer, and one echoing a 10 kB field would not arrive at all.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any
from uuid import uuid4

from gateway.proto_mapping import SIDE_FROM_PB, TIF_FROM_PB, TYPE_FROM_PB
from orders.errors import InvalidOrder, RiskLimitExceeded
from orders.exact import product
from orders.model import Order, OrderType, TimeInForce, decimal_str
from orders.rules import SymbolRules, parse_decimal
from proto import order_pb2 as pb
from runtime.settings import RiskSettings

CLIENT_ORDER_ID = re.compile(r"[.A-Z:/a-z0-9_-]{1,36}")
_SYMBOL = re.compile(r"[A-Z0-9]{2,30}")
_ASCII_DECIMAL = frozenset("0123456789.")
_PRINTABLE = re.compile(r"[\x21-\x7e]*")  # printable ASCII, no spaces
# Patterns are applied with fullmatch: `match` with `$` also accepts a trailing newline.
_QUOTED_CHARS = 16
_CLIENT_ORDER_ID_RULE = "must be 1-36 characters of [.A-Z:/a-z0-9_-]"

MAX_SYMBOL_CHARS = 30
MAX_DECIMAL_CHARS = 40
MAX_CLIENT_ORDER_ID_CHARS = 36
MAX_USER_ID_CHARS = 64
MAX_ORDER_ID_CHARS = 64
MAX_PAGE_TOKEN_CHARS = 256
MAX_RESUME_TOKEN_CHARS = 64
MAX_STREAM_SYMBOLS = 100


def quote(value: str) -> str:
    """`value` quoted for an error message: at most its first 16 characters, and its length if cut."""
    if len(value) <= _QUOTED_CHARS:
        return repr(value)
    return f"{value[:_QUOTED_CHARS]!r}... ({len(value)} characters)"


def check_length(field: str, value: str, max_chars: int) -> None:
    """Raise InvalidOrder naming `field` if `value` is longer than `max_chars` characters."""
    if len(value) > max_chars:
        raise InvalidOrder(field, f"must be at most {max_chars} characters, got {len(value)}")


def check_user_id(field: str, user_id: str) -> None:
    """`user_id`: optional, at most 64 printable ASCII characters without spaces."""
    check_length(field, user_id, MAX_USER_ID_CHARS)
    if not _PRINTABLE.fullmatch(user_id):
        raise InvalidOrder(
            field,
            f"must be printable ASCII without spaces (at most {MAX_USER_ID_CHARS}), got {quote(user_id)}",
        )


def check_symbol_text(field: str, symbol: str) -> None:
    """A symbol's shape only (2-30 upper-case letters and digits); whether it trades is checked later."""
    check_length(field, symbol, MAX_SYMBOL_CHARS)
    if not _SYMBOL.fullmatch(symbol):
        raise InvalidOrder(
            field, f"must be 2-30 upper-case letters and digits, e.g. BTCUSDT, got {quote(symbol)}"
        )


def check_create_text(req: pb.CreateOrderRequest) -> None:
    """Bound every string field of a CreateOrderRequest before anything else reads it.

    Raises InvalidOrder naming the field and its limit.
    """
    check_length("symbol", req.symbol, MAX_SYMBOL_CHARS)
    check_length("quantity", req.quantity, MAX_DECIMAL_CHARS)
    check_length("price", req.price, MAX_DECIMAL_CHARS)
    if len(req.client_order_id) > MAX_CLIENT_ORDER_ID_CHARS:
        raise InvalidOrder(
            "client_order_id", f"{_CLIENT_ORDER_ID_RULE}, got {len(req.client_order_id)} characters"
        )
    check_user_id("user_id", req.user_id)


def check_stream_request(symbols: Sequence[str], user_id: str, resume_token: str) -> None:
    """Bound StreamOrderUpdates' fields: at most 100 well-formed symbols, user_id, resume_token."""
    if len(symbols) > MAX_STREAM_SYMBOLS:
        raise InvalidOrder("symbols", f"at most {MAX_STREAM_SYMBOLS} symbols per stream, got {len(symbols)}")
    for symbol in symbols:
        check_symbol_text("symbols", symbol)
    check_user_id("user_id", user_id)
    check_length("resume_token", resume_token, MAX_RESUME_TOKEN_CHARS)


def parse_request_decimal(field: str, text: str) -> Decimal:
    """A request's decimal string: ASCII digits and at most one '.', nothing else (no exponent,
    sign, NaN or Unicode digits, which Python's Decimal would accept, and no spaces or newlines
    around it). Raises InvalidOrder; blank is "is required"."""
    check_length(field, text, MAX_DECIMAL_CHARS)
    if text.strip() and not _ASCII_DECIMAL.issuperset(text):
        raise InvalidOrder(
            field, f"must be a plain decimal string like '0.001' (ASCII digits and '.'), got {quote(text)}"
        )
    return parse_decimal(field, text)


def mint_client_order_id() -> str:
    """A fresh Binance newClientOrderId: 'oe-' + 32 hex digits (35 characters)."""
    return f"oe-{uuid4().hex}"


def build_order(req: pb.CreateOrderRequest, rules: dict[str, SymbolRules], risk: RiskSettings) -> Order:
    """Validate `req` and return the NEW order it describes.

    Raises InvalidOrder (or RiskLimitExceeded) naming the first field that breaks a rule.
    `risk` is the limits in force; MARKET notional and the mark-price checks are
    `gateway.risk`'s, the counting limits the order store's.
    Conditional kinds are checked by `gateway.order_kinds`.
    """
    from gateway.order_kinds import CONDITIONAL_KINDS, build_conditional_order, check_plain_order

    check_create_text(req)
    symbol_rules = _check_symbol(req.symbol, rules, risk)
    if req.side not in SIDE_FROM_PB:
        raise InvalidOrder("side", _enum_rule(req.side, "BUY or SELL"))
    if req.type not in TYPE_FROM_PB:
        raise InvalidOrder("type", _enum_rule(req.type, f"LIMIT, MARKET, {CONDITIONAL_KINDS}"))
    order_type = TYPE_FROM_PB[req.type]
    if order_type.is_conditional:
        return build_conditional_order(req, order_type, symbol_rules, risk)
    check_plain_order(req)
    quantity = parse_request_decimal("quantity", req.quantity)
    symbol_rules.check_quantity(quantity, order_type)

    price: Decimal | None = None
    tif: TimeInForce | None = None
    if order_type is OrderType.LIMIT:
        price = parse_request_decimal("price", req.price)
        symbol_rules.check_price(price)
        tif = _limit_time_in_force(req)
        symbol_rules.check_notional(price, quantity, reduce_only=req.reduce_only)
        check_order_size(product("quantity", price, quantity), quantity, risk)
    else:
        if req.price.strip():
            raise InvalidOrder("price", "must be empty for MARKET orders")
        if req.time_in_force != pb.TIF_UNSPECIFIED:
            raise InvalidOrder("time_in_force", "must be unset for MARKET orders")
        if req.post_only:
            raise InvalidOrder("post_only", "applies to LIMIT orders only")
        check_order_size(None, quantity, risk)

    return new_order(req, order_type, quantity, price, tif, post_only=req.post_only)


def new_order(
    req: pb.CreateOrderRequest,
    order_type: OrderType,
    quantity: Decimal,
    price: Decimal | None,
    time_in_force: TimeInForce | None,
    **terms: Any,
) -> Order:
    """A new Order (fresh id, the request's or a generated client id) from checked terms; ``terms`` are
    the further Order fields of its kind (post_only, trigger_price...)."""
    return Order(
        order_id=str(uuid4()),
        client_order_id=request_client_order_id(req),
        symbol=req.symbol,
        side=SIDE_FROM_PB[req.side],
        type=order_type,
        quantity=quantity,
        price=price,
        time_in_force=time_in_force,
        reduce_only=req.reduce_only,
        user_id=req.user_id,
        **terms,
    )


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


def check_order_size(notional: Decimal | None, quantity: Decimal, risk: RiskSettings) -> None:
    """Raise RiskLimitExceeded if `quantity` or `notional` is over the risk settings' per-order limits."""
    if risk.max_order_quantity and quantity > risk.max_order_quantity:
        raise RiskLimitExceeded(
            "quantity",
            f"{decimal_str(quantity)} must be at most {decimal_str(risk.max_order_quantity)} "
            "(risk.max_order_quantity)",
            limit="max_order_quantity",
        )
    if notional is not None and notional > risk.max_order_notional:
        raise RiskLimitExceeded(
            "quantity",
            f"price x quantity = {decimal_str(notional)} exceeds "
            f"{decimal_str(risk.max_order_notional)} (risk.max_order_notional)",
            limit="max_order_notional",
        )


def _enum_rule(value: int, allowed: str) -> str:
    if value == 0:
        return f"is required ({allowed})"
    return f"unknown value {value} (expected {allowed})"


def request_client_order_id(req: pb.CreateOrderRequest) -> str:
    """The request's client_order_id, or a fresh one if it has none.

    Raises InvalidOrder if the given one breaks the rule.
    """
    client_order_id = req.client_order_id or mint_client_order_id()
    if not CLIENT_ORDER_ID.fullmatch(client_order_id):
        raise InvalidOrder("client_order_id", f"{_CLIENT_ORDER_ID_RULE}, got {quote(client_order_id)}")
    return client_order_id
