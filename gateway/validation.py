"""The rules a request's fields must meet, each refusal naming the field and the rule.

A leaf the handlers call (`gateway.handlers` and the modules it routes to): the bounds and
shapes of every string a client sends, decimal parsing, client order ids and the per-order
risk sizes. Building an Order from a PlaceOrder, with the symbol's exchange filters, is
`gateway.order_builder`'s; the conditional kinds' terms `gateway.order_kinds`'.

Every string a client sends has a length bound, checked before anything else reads
it, and an error quotes at most a short prefix of a bad value (`quote`): a gRPC status
message travels in a trailer, and one echoing a 10 kB field would not arrive at all.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal
from uuid import uuid4

from order_execution.gateway.commands import CancelAll, CancelOrder, ListOrders, PlaceBatch, PlaceOrder
from order_execution.orders.errors import InvalidOrder, RiskLimitExceeded
from order_execution.orders.model import decimal_str
from order_execution.orders.rules import parse_decimal
from order_execution.runtime.settings import RiskSettings

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
MAX_PAGE = 500
DEFAULT_PAGE = 100
MAX_BATCH_ITEMS = 20
# The conditional kinds' decimal strings (gateway.order_kinds), bounded with the others.
_CONDITIONAL_DECIMALS = ("trigger_price", "callback_rate", "activation_price")


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


def check_create_text(command: PlaceOrder) -> None:
    """Bound every string field of a PlaceOrder before anything else reads it (its user_id may
    key its client's request rate). Raises InvalidOrder naming the field and its limit."""
    check_length("symbol", command.symbol, MAX_SYMBOL_CHARS)
    check_length("quantity", command.quantity, MAX_DECIMAL_CHARS)
    check_length("price", command.price, MAX_DECIMAL_CHARS)
    if len(command.client_order_id) > MAX_CLIENT_ORDER_ID_CHARS:
        raise InvalidOrder(
            "client_order_id", f"{_CLIENT_ORDER_ID_RULE}, got {len(command.client_order_id)} characters"
        )
    check_user_id("user_id", command.user_id)
    for field in _CONDITIONAL_DECIMALS:
        check_length(field, getattr(command, field), MAX_DECIMAL_CHARS)


def check_batch(command: PlaceBatch) -> None:
    """CreateOrders holds 1-20 orders; raises InvalidOrder (field `orders`). Items are checked alone."""
    if not command.orders:
        raise InvalidOrder("orders", "must hold at least one order")
    if len(command.orders) > MAX_BATCH_ITEMS:
        raise InvalidOrder("orders", f"at most {MAX_BATCH_ITEMS} orders per call, got {len(command.orders)}")


def check_order_id(order_id: str) -> None:
    """An order id is given and at most 64 characters; raises InvalidOrder (field `order_id`)."""
    if not order_id:
        raise InvalidOrder("order_id", "is required")
    check_length("order_id", order_id, MAX_ORDER_ID_CHARS)


def check_cancel(command: CancelOrder) -> None:
    """CancelOrder's id, and its symbol's shape if one is given."""
    check_order_id(command.order_id)
    if command.symbol:
        check_symbol_text("symbol", command.symbol)


def check_cancel_all(command: CancelAll) -> None:
    """CancelAllOrders names a well-formed symbol."""
    if not command.symbol:
        raise InvalidOrder("symbol", "is required, e.g. BTCUSDT")
    check_symbol_text("symbol", command.symbol)


def check_list(command: ListOrders) -> None:
    """ListOrders' filters: symbol shape, page token length, limit 0-500, time bounds in order."""
    if command.symbol:
        check_symbol_text("symbol", command.symbol)
    check_length("page_token", command.page_token, MAX_PAGE_TOKEN_CHARS)
    if command.limit < 0 or command.limit > MAX_PAGE:
        raise InvalidOrder("limit", f"must be between 1 and {MAX_PAGE} (0 means {DEFAULT_PAGE})")
    start_ms, end_ms = command.start_ms, command.end_ms
    if start_ms < 0 or end_ms < 0 or (end_ms and start_ms and end_ms <= start_ms):
        raise InvalidOrder("end_time", "must be after start_time (Unix ms; 0 = no bound)")


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


def enum_rule(value: int, allowed: str) -> str:
    """The rule an enum field broke: unset (0), or a number outside `allowed`."""
    if value == 0:
        return f"is required ({allowed})"
    return f"unknown value {value} (expected {allowed})"


def request_client_order_id(command: PlaceOrder) -> str:
    """The command's client_order_id, or a fresh one if it has none.

    Raises InvalidOrder if the given one breaks the rule.
    """
    client_order_id = command.client_order_id or mint_client_order_id()
    if not CLIENT_ORDER_ID.fullmatch(client_order_id):
        raise InvalidOrder("client_order_id", f"{_CLIENT_ORDER_ID_RULE}, got {quote(client_order_id)}")
    return client_order_id
