"""What Binance's answers mean: errors classified into the `exchange.errors` tree, and order
objects and trades read into the state machine's terms.

`classify` decides once, for every request, whether a refusal is definite, not executed
(safe to send again) or of unknown outcome; the client raises what it returns.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from order_execution.exchange.errors import (
    ClockSkew,
    DuplicateClientOrderId,
    ExchangeError,
    ExchangeUnavailable,
    OrderNotFoundAtExchange,
    OrderRejected,
    OutcomeUnknown,
    RateLimited,
    UnknownOrder,
)
from order_execution.exchange.http import HttpResponse
from order_execution.orders.fsm import ExchangeReport
from order_execution.orders.model import Fill, OrderState

_OUTCOME_UNKNOWN_CODES = {-1000, -1006, -1007}
_NOT_EXECUTED_CODES = {-1008, -1003, -1015}
_BANNED_UNTIL = re.compile(r"banned until (\d{10,})")


def int_header(headers: Mapping[str, str], name: str) -> int | None:
    try:
        return int(headers[name])
    except (KeyError, ValueError):
        return None


def ban_end_ms(response: HttpResponse, exchange_now_ms: int) -> int:
    """When a 418 ban ends, on the exchange's clock: "banned until <ms>" in the message, else Retry-After."""
    found = _BANNED_UNTIL.search(response.text)
    if found:
        return int(found.group(1))
    return exchange_now_ms + int(retry_after_s(response) * 1000)


def classify(response: HttpResponse) -> ExchangeError:
    """Map a non-200 response to the most specific ExchangeError."""
    status = response.status
    code: int | None = None
    message = response.text[:200]
    try:
        body = response.json()
        if isinstance(body, dict) and "code" in body:
            code = int(body["code"])
            message = str(body.get("msg", ""))
    except (json.JSONDecodeError, ValueError):
        pass
    text = f"HTTP {status}" + (f" {code}" if code is not None else "") + f": {message}"

    if status in (418, 429):
        retry_after = retry_after_s(response)
        return RateLimited(text, retry_after_s=retry_after, code=code, status=status)
    if code in _OUTCOME_UNKNOWN_CODES or "Unknown error" in message:
        return OutcomeUnknown(text, code=code, status=status)
    if code == -1021:
        return ClockSkew(text, code=code, status=status)
    if code in _NOT_EXECUTED_CODES or (status == 503 and "Service Unavailable" in message) or status == 403:
        return ExchangeUnavailable(text, code=code, status=status)
    if status >= 500:
        return OutcomeUnknown(text, code=code, status=status)
    if code == -2013:
        return OrderNotFoundAtExchange(text, code=code, status=status)
    if code == -2011:
        return UnknownOrder(text, code=code, status=status)
    if code == -4116:
        return DuplicateClientOrderId(text, code=code, status=status)
    return OrderRejected(text, code=code, status=status)


TOO_MANY_ORDERS = -1015  # the account's ORDERS limit; any other 429 is the IP's weight


def limits_whole_ip(response: HttpResponse) -> bool:
    """Whether a 429 or 418 `response` limits every account on the IP (a ban, the IP's weight),
    not just the account that sent it (too many orders, -1015)."""
    if response.status == 418:
        return True
    try:
        body = response.json()
    except (json.JSONDecodeError, ValueError):
        return True
    return not (isinstance(body, dict) and body.get("code") == TOO_MANY_ORDERS)


def retry_after_s(response: HttpResponse) -> float:
    header = response.headers.get("Retry-After")
    try:
        return max(float(header), 0.0) if header else 1.0
    except ValueError:
        return 1.0


_STATUS = {
    "NEW": OrderState.SUBMITTED,
    "PARTIALLY_FILLED": OrderState.PARTIALLY_FILLED,
    "FILLED": OrderState.FILLED,
    "CANCELED": OrderState.CANCELED,
    "EXPIRED": OrderState.EXPIRED,
    "EXPIRED_IN_MATCH": OrderState.EXPIRED,
    "REJECTED": OrderState.REJECTED,
}


def order_state(status: str) -> OrderState:
    """Our state for a Binance order status (`X`); raises ExchangeError for one we do not know."""
    if status not in _STATUS:
        raise ExchangeError(f"unexpected order status {status!r}")
    return _STATUS[status]


def to_report(reply: dict[str, Any], fills: tuple[Fill, ...] = ()) -> ExchangeReport:
    """An ExchangeReport from a Binance order object (new, query or cancel reply), with `fills`.

    Raises ExchangeError for a status we do not know, rather than guessing.
    """
    status = str(reply.get("status", ""))
    return ExchangeReport(
        state=order_state(status),
        filled_quantity=Decimal(str(reply.get("executedQty", "0"))),
        average_price=Decimal(str(reply.get("avgPrice", "0"))),
        exchange_order_id=str(reply.get("orderId", "")),
        reason=f"exchange status {status}" if status == "REJECTED" else "",
        fills=fills,
    )


def to_fill(trade: dict[str, Any]) -> Fill:
    """A Fill from a `userTrades` row."""
    return Fill(
        trade_id=str(trade["id"]),
        quantity=Decimal(str(trade["qty"])),
        price=Decimal(str(trade["price"])),
        fee=Decimal(str(trade.get("commission", "0"))),
        fee_asset=str(trade.get("commissionAsset", "")),
        maker=bool(trade.get("maker", False)),
        time=int(trade.get("time", 0)),
    )
