"""Kline intervals, one-minute bars, and the deterministic synthetic past before the recorded history.

Binance's futures intervals are all whole minutes, so the simulator records one-minute bars of the
reference price (and of the public trades) and aggregates them into any interval. Buckets align as on
Binance: fixed-length intervals up to ``3d`` on the Unix epoch, ``1w`` on Monday 00:00 UTC, ``1M`` on the
first day of the month. Before the first recorded minute the price follows ``SyntheticPast``: a smooth,
seeded curve anchored so that it meets the recorded history exactly, which keeps open/close continuous.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

from usdm_simulator.book import mix, symbol_key, unit
from usdm_simulator.symbols import SymbolSpec

MINUTE_MS = 60_000
_DAY_MS = 86_400_000
_FIXED_MS = {
    "1m": MINUTE_MS,
    "3m": 3 * MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": 60 * MINUTE_MS,
    "2h": 120 * MINUTE_MS,
    "4h": 240 * MINUTE_MS,
    "6h": 360 * MINUTE_MS,
    "8h": 480 * MINUTE_MS,
    "12h": 720 * MINUTE_MS,
    "1d": _DAY_MS,
    "3d": 3 * _DAY_MS,
    "1w": 7 * _DAY_MS,
}
INTERVALS = frozenset([*_FIXED_MS, "1M"])
_MONDAY_OFFSET_MS = 4 * _DAY_MS  # 1970-01-01 was a Thursday


def bucket_start(interval: str, t_ms: int) -> int:
    """Open time of the ``interval`` bucket that contains ``t_ms`` (KeyError for an unknown interval)."""
    if interval == "1M":
        d = datetime.fromtimestamp(t_ms / 1000, UTC)
        return int(datetime(d.year, d.month, 1, tzinfo=UTC).timestamp() * 1000)
    size = _FIXED_MS[interval]
    offset = _MONDAY_OFFSET_MS if interval == "1w" else 0
    return (t_ms - offset) // size * size + offset


def bucket_end(interval: str, open_ms: int) -> int:
    """Open time of the bucket after the one opening at ``open_ms``."""
    if interval == "1M":
        d = datetime.fromtimestamp(open_ms / 1000, UTC)
        year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
        return int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)
    return open_ms + _FIXED_MS[interval]


def bucket_before(interval: str, open_ms: int) -> int:
    """Open time of the bucket before the one opening at ``open_ms``."""
    return bucket_start(interval, open_ms - 1)


@dataclass(slots=True)
class Bar:
    """OHLC and traded amounts over ``[open_ms, close_ms)``; trade ids -1 when no public trade fell in it."""

    open_ms: int
    close_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    count: int
    taker_buy_volume: Decimal
    taker_buy_quote: Decimal
    first_trade_id: int = -1
    last_trade_id: int = -1

    def add_trade(self, trade_id: int, price: Decimal, qty: Decimal, taker_buys: bool) -> None:
        """Account one public trade (at ``price``, already reflected in OHLC) in the bar's amounts."""
        self.volume += qty
        self.quote_volume += price * qty
        self.count += 1
        if taker_buys:
            self.taker_buy_volume += qty
            self.taker_buy_quote += price * qty
        if self.first_trade_id < 0:
            self.first_trade_id = trade_id
        self.last_trade_id = trade_id

    def move(self, price: Decimal) -> None:
        """Set the close to ``price``, stretching high/low."""
        self.close = price
        self.high = max(self.high, price)
        self.low = min(self.low, price)


def flat_bar(open_ms: int, close_ms: int, price: Decimal) -> Bar:
    """A bar where nothing traded and the price stayed at ``price``."""
    zero = Decimal(0)
    return Bar(open_ms, close_ms, price, price, price, price, zero, zero, 0, zero, zero)


def merge(bars: list[Bar], open_ms: int, close_ms: int) -> Bar:
    """One bar over ``[open_ms, close_ms)`` from consecutive ``bars`` (at least one)."""
    first, last = bars[0], bars[-1]
    ids = [b for b in bars if b.first_trade_id >= 0]
    return Bar(
        open_ms,
        close_ms,
        first.open,
        max(b.high for b in bars),
        min(b.low for b in bars),
        last.close,
        sum((b.volume for b in bars), Decimal(0)),
        sum((b.quote_volume for b in bars), Decimal(0)),
        sum(b.count for b in bars),
        sum((b.taker_buy_volume for b in bars), Decimal(0)),
        sum((b.taker_buy_quote for b in bars), Decimal(0)),
        ids[0].first_trade_id if ids else -1,
        ids[-1].last_trade_id if ids else -1,
    )


_WAVES = ((17 * MINUTE_MS, 0.0015), (187 * MINUTE_MS, 0.006), (55 * 3_600_000, 0.03), (41 * _DAY_MS, 0.1))


class SyntheticPast:
    """Prices before the recorded history: ``anchor_price * exp(f(t) - f(anchor_ms))``, f a sum of seeded
    waves (minutes to weeks), so the curve meets the first recorded open exactly."""

    def __init__(self, spec: SymbolSpec, seed: int, anchor_ms: int, anchor_price: Decimal) -> None:
        self._spec = spec
        self._seed = seed
        self._key = symbol_key(spec.symbol)
        self._phases = [unit(seed, self._key, i) * 2 * math.pi for i in range(len(_WAVES))]
        self.anchor_ms = anchor_ms
        self.anchor_price = anchor_price

    def _f(self, t_ms: int) -> float:
        return sum(
            a * math.sin(2 * math.pi * t_ms / p + ph) for (p, a), ph in zip(_WAVES, self._phases, strict=True)
        )

    def _on_tick(self, value: float, rounding: str) -> Decimal:
        tick = self._spec.tick_size
        price = (Decimal(repr(value)) / tick).to_integral_value(rounding) * tick
        return min(max(price, self._spec.min_price), self._spec.max_price)

    def price_at(self, t_ms: int) -> Decimal:
        """The synthetic price at ``t_ms`` (on the tick grid); exactly the anchor price at the anchor."""
        if t_ms >= self.anchor_ms:
            return self.anchor_price
        value = float(self.anchor_price) * math.exp(self._f(t_ms) - self._f(self.anchor_ms))
        return self._on_tick(value, ROUND_HALF_EVEN)

    def bar(self, open_ms: int, close_ms: int) -> Bar:
        """A synthetic bar over ``[open_ms, close_ms)`` (close_ms <= anchor): open/close on the curve, a
        seeded wick, and volume of roughly 40 000 USDT a minute."""
        o, c = self.price_at(open_ms), self.price_at(close_ms)
        minutes = max(1, (close_ms - open_ms) // MINUTE_MS)
        u = unit(self._seed, self._key, open_ms, close_ms)
        wick = 0.0004 * u * math.sqrt(minutes)
        high = max(o, c, self._on_tick(float(max(o, c)) * (1 + wick), ROUND_CEILING))
        low = min(o, c, self._on_tick(float(min(o, c)) * (1 - wick), ROUND_FLOOR))
        mid = (o + c) / 2
        volume = _on_step(Decimal(40_000 * minutes * (0.5 + u)) / mid, self._spec)
        buy_share = Decimal(300 + mix(self._seed, open_ms) % 400) / 1000
        buy = _on_step(volume * buy_share, self._spec)
        count = int(minutes * (20 + 60 * u))
        return Bar(open_ms, close_ms, o, high, low, c, volume, volume * mid, count, buy, buy * mid)


def _on_step(qty: Decimal, spec: SymbolSpec) -> Decimal:
    return (qty / spec.step_size).to_integral_value(ROUND_FLOOR) * spec.step_size
