"""History endpoints with Binance's paging rules: ``allOrders``, ``userTrades`` and ``income``.

Times are the simulated clock's (``ExchangeClock.now_ms``). Common rules:

* ``limit``: default 500 (``income``: 100), at most 1000 (larger values are capped); not an integer ≥ 1:
  -1130.
* ``startTime``/``endTime`` (inclusive, ms): with only ``startTime`` the window is the 7 days after it,
  with only ``endTime`` the 7 days before it; ``allOrders`` and ``userTrades`` refuse a window longer than
  7 days with -1127. With ``startTime`` the oldest ``limit`` rows of the window are returned (so a client
  pages forward by moving ``startTime``); otherwise the newest ``limit``. Without either time (and without
  an id to start from) the window is the last 7 days.
* ``allOrders``: ``orderId`` returns orders with an id ≥ it, oldest first. CANCELED or EXPIRED orders with
  no fill disappear 3 days after creation, as on Binance.
* ``userTrades``: ``fromId`` returns trades with an id ≥ it, oldest first, and cannot be combined with a
  time (-1128); ``orderId`` returns that order's trades.
* ``income``: ``symbol`` and ``incomeType`` (TRANSFER, REALIZED_PNL, FUNDING_FEE, COMMISSION) filter;
  ``page`` (from 1) skips ``(page - 1) * limit`` rows; Binance allows wider windows here (no -1127).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from usdm_simulator import errors
from usdm_simulator.errors import BinanceError
from usdm_simulator.models import Order, Trade
from usdm_simulator.pipeline import Call
from usdm_simulator.validation import require

SEVEN_DAYS_MS = 7 * 24 * 3600 * 1000
RETENTION_NO_FILL_MS = 3 * 24 * 3600 * 1000
MAX_LIMIT = 1000
TOO_LONG_WINDOW = -1127
BAD_COMBINATION = -1128
_INT_RE = re.compile(r"^[0-9]{1,19}$")

T = TypeVar("T")


def _int(call: Call, name: str) -> int | None:
    raw = call.params.get(name)
    if raw is None or raw == "":
        return None
    if not _INT_RE.fullmatch(raw):
        raise errors.invalid_parameter(name)
    return int(raw)


def _limit(call: Call, default: int) -> int:
    limit = _int(call, "limit")
    if limit is None:
        return default
    if limit < 1:
        raise errors.invalid_parameter("limit")
    return min(limit, MAX_LIMIT)


@dataclass(frozen=True)
class _Window:
    """An inclusive time window and whether rows are taken from its start (oldest first) or its end."""

    start_ms: int
    end_ms: int
    from_start: bool


def _window(call: Call, max_span_ms: int | None) -> _Window:
    """The window ``startTime``/``endTime`` ask for (see the module docstring); -1127 if too long."""
    start, end = _int(call, "startTime"), _int(call, "endTime")
    if start is not None and end is not None:
        if max_span_ms is not None and end - start > max_span_ms:
            raise BinanceError(TOO_LONG_WINDOW, "More than 168 hours between startTime and endTime.")
        return _Window(start, end, True)
    if start is not None:
        return _Window(start, start + SEVEN_DAYS_MS, True)
    if end is not None:
        return _Window(end - SEVEN_DAYS_MS, end, False)
    now = call.state.clock.now_ms()
    return _Window(now - SEVEN_DAYS_MS, now, False)


def _page(
    rows: Sequence[T], window: _Window, time_of: Callable[[T], int], limit: int, skip: int = 0
) -> list[T]:
    """Rows (oldest first) inside ``window``: the oldest ``limit`` after ``skip`` from its start, or the
    newest ``limit`` before ``skip`` from its end."""
    inside = [r for r in rows if window.start_ms <= time_of(r) <= window.end_ms]
    if window.from_start:
        return inside[skip : skip + limit]
    stop = len(inside) - skip
    return inside[max(0, stop - limit) : max(0, stop)]


def _symbol(call: Call) -> str:
    symbol = require(call.params, "symbol")
    if symbol not in call.state.engine.specs:
        raise errors.error(errors.BAD_SYMBOL)
    return symbol


def _visible(order: Order, now_ms: int) -> bool:
    """False for a CANCELED/EXPIRED order without fills older than 3 days (Binance forgets those)."""
    if order.status in ("CANCELED", "EXPIRED") and order.executed_qty == 0:
        return now_ms - order.time_ms <= RETENTION_NO_FILL_MS
    return True


def all_orders(call: Call) -> list[dict[str, Any]]:
    """``GET /fapi/v1/allOrders``: the account's orders in ``symbol`` by ``orderId`` or time, oldest first."""
    symbol = _symbol(call)
    limit = _limit(call, 500)
    now = call.state.clock.now_ms()
    mine = sorted(
        (o for o in call.acct.orders.values() if o.symbol == symbol and _visible(o, now)),
        key=lambda o: o.order_id,
    )
    from_id = _int(call, "orderId")
    if from_id is not None:
        if "startTime" in call.params or "endTime" in call.params:
            mine = _page(mine, _window(call, SEVEN_DAYS_MS), lambda o: o.time_ms, len(mine))
        rows = [o for o in mine if o.order_id >= from_id][:limit]
    else:
        by_time = sorted(mine, key=lambda o: (o.time_ms, o.order_id))
        rows = _page(by_time, _window(call, SEVEN_DAYS_MS), lambda o: o.time_ms, limit)
    return [o.to_json() for o in rows]


def user_trades(call: Call) -> list[dict[str, Any]]:
    """``GET /fapi/v1/userTrades``: the account's fills in ``symbol`` by ``fromId``, ``orderId`` or time."""
    symbol = _symbol(call)
    limit = _limit(call, 500)
    trades: list[Trade] = [t for t in call.acct.trades if t.order.symbol == symbol]
    has_time = "startTime" in call.params or "endTime" in call.params
    from_id = _int(call, "fromId")
    order_id = _int(call, "orderId")
    if from_id is not None and has_time:
        raise BinanceError(BAD_COMBINATION, "Combination of optional parameters invalid.")
    if order_id is not None:
        trades = [t for t in trades if t.order.order_id == order_id]
    if from_id is not None:
        rows = [t for t in trades if t.trade_id >= from_id][:limit]
    elif order_id is not None and not has_time:
        rows = trades[:limit]
    else:
        rows = _page(trades, _window(call, SEVEN_DAYS_MS), lambda t: t.time_ms, limit)
    return [t.to_json() for t in rows]


def income(call: Call) -> list[dict[str, Any]]:
    """``GET /fapi/v1/income``: wallet movements (see ``usdm_simulator.income``), filtered and paged."""
    symbol = call.params.get("symbol") or None
    if symbol is not None and symbol not in call.state.engine.specs:
        raise errors.error(errors.BAD_SYMBOL)
    income_type = call.params.get("incomeType") or None
    limit = _limit(call, 100)
    page = _int(call, "page")
    if page is not None and page < 1:
        raise errors.invalid_parameter("page")
    entries = [
        e
        for e in call.state.income.entries(call.acct)
        if (symbol is None or e.symbol == symbol) and (income_type is None or e.income_type == income_type)
    ]
    skip = ((page or 1) - 1) * limit
    rows = _page(entries, _window(call, None), lambda e: e.time_ms, limit, skip)
    return [e.to_json() for e in rows]
