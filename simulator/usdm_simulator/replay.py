"""Recorded price series read from CSV files, to replay as a symbol's reference price.

Two layouts, as in Binance's public data dumps (data.binance.vision), with or without their header row:

* **trades** — ``id,price,qty,quote_qty,time,is_buyer_maker`` (and aggTrades,
  ``agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker``): one point
  per row, at the row's time and price.
* **klines** — ``open_time,open,high,low,close[,volume,close_time,…]``: four points per bar, at 0, 1/4,
  1/2 and 3/4 of the bar: a rising bar (close >= open) goes open → low → high → close, a falling one
  open → high → low → close. The bar lasts ``close_time + 1 - open_time`` if the file has ``close_time``,
  else until the next bar opens (the last bar as long as the one before, or one minute).

Times are epoch milliseconds; values of 10^14 and above are read as microseconds. Times must not go
backwards. Any other defect raises :class:`ReplayFileError` naming the file and the line.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

_MICROS_FROM = 10**14
_DEFAULT_BAR_MS = 60_000


class ReplayFileError(ValueError):
    """A replay file that cannot be read: the message starts with ``<path>:<line>:``."""

    def __init__(self, path: Path, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")


@dataclass(frozen=True, slots=True)
class ReplayPoint:
    """One reference price of a series, at ``time_ms`` (epoch milliseconds of the recording)."""

    time_ms: int
    price: Decimal


@dataclass(frozen=True, slots=True)
class _Layout:
    kind: str  # "trades" | "klines"
    width: int
    time_col: int
    price_cols: tuple[int, ...]  # trades: (price,); klines: (open, high, low, close)
    close_time_col: int | None = None


@dataclass(frozen=True, slots=True)
class _Bar:
    open_ms: int
    prices: tuple[Decimal, Decimal, Decimal, Decimal]
    close_ms: int | None


def check_series(path: Path) -> int:
    """Read the whole file once; return its number of points. ReplayFileError if it is unusable or empty."""
    count = sum(1 for _ in iter_points(path))
    if count == 0:
        raise ReplayFileError(path, 1, "no data rows")
    return count


def iter_points(path: Path) -> Iterator[ReplayPoint]:
    """Yield the series' points in file order, reading lazily. ReplayFileError at the first bad line."""
    try:
        handle = path.open(newline="")
    except OSError as exc:
        raise ReplayFileError(path, 0, f"cannot open: {exc.strerror or exc}") from exc
    with handle:
        layout: _Layout | None = None
        last_ms = -1
        pending: _Bar | None = None
        previous_bar_ms = _DEFAULT_BAR_MS
        for line, row in enumerate(csv.reader(handle), start=1):
            cells = [c.strip() for c in row]
            if not any(cells):
                continue
            if layout is None:
                layout = _layout(path, line, cells)
                if not cells[0].lstrip("-").isdigit():
                    continue  # the header row
            if len(cells) != layout.width:
                raise ReplayFileError(path, line, f"expected {layout.width} columns, got {len(cells)}")
            time_ms = _time(path, line, cells[layout.time_col])
            if time_ms < last_ms:
                raise ReplayFileError(path, line, f"time {cells[layout.time_col]} goes backwards")
            last_ms = time_ms
            prices = [_price(path, line, cells[i]) for i in layout.price_cols]
            if layout.kind == "trades":
                yield ReplayPoint(time_ms, prices[0])
                continue
            bar = _bar(path, line, layout, cells, time_ms, prices)
            if pending is not None:
                previous_bar_ms = _bar_ms(pending, time_ms)
                yield from _bar_points(pending, previous_bar_ms)
            pending = bar
        if pending is not None:
            yield from _bar_points(pending, _bar_ms(pending, pending.open_ms + previous_bar_ms))


def _layout(path: Path, line: int, cells: list[str]) -> _Layout:
    """The layout told by the header row, or guessed from the first data row."""
    names = [c.lower() for c in cells]
    if not cells[0].lstrip("-").isdigit():
        if "price" in names and ("time" in names or "transact_time" in names):
            time_col = names.index("time") if "time" in names else names.index("transact_time")
            return _Layout("trades", len(names), time_col, (names.index("price"),))
        if all(n in names for n in ("open_time", "open", "high", "low", "close")):
            cols = tuple(names.index(n) for n in ("open", "high", "low", "close"))
            close_col = names.index("close_time") if "close_time" in names else None
            return _Layout("klines", len(names), names.index("open_time"), cols, close_col)
        raise ReplayFileError(
            path,
            line,
            "unrecognised header: expected Binance trades (id,price,qty,quote_qty,time,"
            "is_buyer_maker) or klines (open_time,open,high,low,close,…) columns",
        )
    if names[-1] in ("true", "false") and len(names) in (6, 7):
        return _Layout("trades", len(names), len(names) - 2, (1,))
    if len(names) >= 5:
        return _Layout("klines", len(names), 0, (1, 2, 3, 4), 6 if len(names) > 6 else None)
    raise ReplayFileError(path, line, f"cannot tell trades from klines in a row of {len(names)} columns")


def _time(path: Path, line: int, cell: str) -> int:
    try:
        value = int(cell)
    except ValueError:
        raise ReplayFileError(path, line, f"time {cell!r} is not an integer") from None
    if value < 0:
        raise ReplayFileError(path, line, f"time {cell!r} is negative")
    return value // 1000 if value >= _MICROS_FROM else value


def _price(path: Path, line: int, cell: str) -> Decimal:
    try:
        value = Decimal(cell)
    except InvalidOperation:
        raise ReplayFileError(path, line, f"price {cell!r} is not a number") from None
    if not value.is_finite() or value <= 0:
        raise ReplayFileError(path, line, f"price {cell!r} is not a positive number")
    return value


def _bar(
    path: Path, line: int, layout: _Layout, cells: list[str], open_ms: int, prices: list[Decimal]
) -> _Bar:
    o, h, lo, c = prices
    if h < max(o, c, lo) or lo > min(o, c):
        raise ReplayFileError(path, line, "high/low do not enclose open and close")
    close_ms = None
    if layout.close_time_col is not None:
        close_ms = _time(path, line, cells[layout.close_time_col])
        if close_ms < open_ms:
            raise ReplayFileError(path, line, "close_time is before open_time")
    return _Bar(open_ms, (o, h, lo, c), close_ms)


def _bar_ms(bar: _Bar, next_open_ms: int) -> int:
    if bar.close_ms is not None:
        return bar.close_ms + 1 - bar.open_ms
    return max(next_open_ms - bar.open_ms, 1)


def _bar_points(bar: _Bar, duration_ms: int) -> Iterator[ReplayPoint]:
    o, h, lo, c = bar.prices
    path = (o, lo, h, c) if c >= o else (o, h, lo, c)
    for i, price in enumerate(path):
        yield ReplayPoint(bar.open_ms + duration_ms * i // 4, price)
