"""A synthetic order book around each symbol's reference price, and the update-id feed clients follow.

The book is a pure function of (seed, symbol, reference price, time): ``book_levels`` returns the levels a
consumer (REST ``depth``, the depth streams, the matching engine in book mode) sees. Best bid and best ask sit
1-3 ticks apart with the reference price between them (inclusive); each side has up to ``MAX_LEVELS``
contiguous tick levels. A level's size depends on its absolute price and a version that advances every
few ``EPOCH_MS`` periods (staggered per price), so depth moves without a timer and tests can replay it.

``DepthFeed`` materialises one symbol's book and numbers its changes as Binance does: every refresh that
changes the book gets an update-id range ``U..u`` (``U`` = previous ``u`` + 1), kept in a bounded log from
which the diff streams merge events with ``pu`` = the previous event's ``u``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from functools import lru_cache
from typing import Literal

from usdm_simulator.symbols import SymbolSpec

MAX_LEVELS = 1000
EPOCH_MS = 250
_MASK = (1 << 64) - 1
_LOG_SIZE = 2000

Level = tuple[Decimal, Decimal]
BookSide = Literal["bids", "asks"]


def mix(*values: int) -> int:
    """A 64-bit hash of integers (splitmix64 chained): deterministic across runs and platforms."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (v & _MASK)) * 0xBF58476D1CE4E5B9 & _MASK
        h = (h ^ (h >> 27)) * 0x94D049BB133111EB & _MASK
        h ^= h >> 31
    return h


def unit(*values: int) -> float:
    """A deterministic float in [0, 1) from integers (see ``mix``)."""
    return mix(*values) / 2.0**64


def symbol_key(symbol: str) -> int:
    """A stable integer for ``symbol`` (for hashing)."""
    return int.from_bytes(symbol.encode()[:8].ljust(8, b"\0"), "big") ^ len(symbol)


def _round_step(qty: Decimal, spec: SymbolSpec) -> Decimal:
    steps = (qty / spec.step_size).to_integral_value(ROUND_FLOOR)
    return max(spec.min_qty, steps * spec.step_size)


def base_quantity(spec: SymbolSpec, price: Decimal) -> Decimal:
    """The typical size of one level: about 15 000 USDT at ``price``, on the LOT_SIZE grid."""
    return _round_step(Decimal(15_000) / price, spec)


@lru_cache(maxsize=1 << 16)
def _level_rhythm(seed: int, key: int, side: int, ticks: int) -> tuple[int, int]:
    """(period, phase) in EPOCH_MS units of the level at ``ticks``: fixed per level, so cached."""
    period = 4 + mix(seed, key, side, ticks) % 8
    return period, mix(seed, key, ticks, side, 7) % period


def _level_size(
    seed: int, key: int, side: int, ticks: int, distance: int, epoch: int, base: Decimal
) -> Decimal:
    period, phase = _level_rhythm(seed, key, side, ticks)
    version = (epoch + phase) // period
    u = unit(seed, key, side, ticks, version)
    factor = Decimal(int((0.05 + 1.6 * u * u) * (1 + distance / 25) * 1000)) / 1000
    return base * factor


def top_of_book(spec: SymbolSpec, seed: int, ref: Decimal, now_ms: int) -> tuple[int, int]:
    """Best bid and best ask as tick counts (price / tickSize): 1-3 ticks apart, ``ref`` between them."""
    key = symbol_key(spec.symbol)
    epoch = now_ms // EPOCH_MS
    spread = 1 + mix(seed, key, epoch // 8, 1) % 3
    below = mix(seed, key, epoch // 8, 2) % spread
    floor_ticks = int((ref / spec.tick_size).to_integral_value(ROUND_FLOOR))
    bid = floor_ticks - below
    return bid, bid + spread


def side_levels(
    spec: SymbolSpec, seed: int, ref: Decimal, now_ms: int, side: BookSide, depth: int = MAX_LEVELS
) -> list[Level]:
    """One side of the book, best first: at most ``depth`` levels, prices within the PRICE_FILTER.

    Sizes are multiples of the LOT_SIZE step and at least ``minQty``.
    """
    key = symbol_key(spec.symbol)
    epoch = now_ms // EPOCH_MS
    bid, ask = top_of_book(spec, seed, ref, now_ms)
    base = base_quantity(spec, ref)
    if side == "bids":
        min_ticks = int((spec.min_price / spec.tick_size).to_integral_value(ROUND_FLOOR))
        ticks = [t for t in range(bid, bid - depth, -1) if t >= min_ticks]
    else:
        max_ticks = int((spec.max_price / spec.tick_size).to_integral_value(ROUND_FLOOR))
        ticks = [t for t in range(ask, ask + depth) if t <= max_ticks]
    code = 0 if side == "bids" else 1
    return [
        (spec.tick_size * t, _round_step(_level_size(seed, key, code, t, i, epoch, base), spec))
        for i, t in enumerate(ticks)
    ]


def level_size_at(
    spec: SymbolSpec, seed: int, ref: Decimal, now_ms: int, side: BookSide, price: Decimal
) -> Decimal:
    """The size ``side_levels`` shows at ``price``, or 0 if the price is not on that side of the book."""
    bid, ask = top_of_book(spec, seed, ref, now_ms)
    ticks = int((price / spec.tick_size).to_integral_value(ROUND_FLOOR))
    distance = bid - ticks if side == "bids" else ticks - ask
    if not 0 <= distance < MAX_LEVELS or not spec.min_price <= price <= spec.max_price:
        return Decimal(0)
    code = 0 if side == "bids" else 1
    size = _level_size(
        seed, symbol_key(spec.symbol), code, ticks, distance, now_ms // EPOCH_MS, base_quantity(spec, ref)
    )
    return _round_step(size, spec)


def book_levels(
    spec: SymbolSpec, seed: int, ref: Decimal, now_ms: int, depth: int = MAX_LEVELS
) -> tuple[list[Level], list[Level]]:
    """(bids best first, asks best first), each side as ``side_levels`` gives it."""
    return (
        side_levels(spec, seed, ref, now_ms, "bids", depth),
        side_levels(spec, seed, ref, now_ms, "asks", depth),
    )


@dataclass(frozen=True)
class BookUpdate:
    """One change of the book: update ids ``first..last`` and the changed levels (size 0 = removed)."""

    first_id: int
    last_id: int
    time_ms: int
    bids: dict[Decimal, Decimal]
    asks: dict[Decimal, Decimal]


@dataclass
class DepthFeed:
    """One symbol's materialised book with Binance-style update ids and a log of recent changes."""

    spec: SymbolSpec
    seed: int
    last_update_id: int = 0
    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)
    updated_ms: int = 0
    log: deque[BookUpdate] = field(default_factory=lambda: deque(maxlen=_LOG_SIZE))

    def __post_init__(self) -> None:
        self.last_update_id = 1_000_000 + mix(self.seed, symbol_key(self.spec.symbol)) % 1_000_000

    def refresh(self, levels: tuple[list[Level], list[Level]], now_ms: int) -> BookUpdate | None:
        """Bring the book to ``levels`` (bids, asks) as of ``now_ms``; log and return the change, or None
        if nothing moved."""
        bid_list, ask_list = levels
        bids, asks = dict(bid_list), dict(ask_list)
        changed_bids = _diff(self.bids, bids)
        changed_asks = _diff(self.asks, asks)
        if not changed_bids and not changed_asks:
            return None
        first = self.last_update_id + 1
        # Binance's ids advance by more than one per event; one id per changed level mirrors that.
        self.last_update_id += len(changed_bids) + len(changed_asks)
        self.bids, self.asks, self.updated_ms = bids, asks, now_ms
        update = BookUpdate(first, self.last_update_id, now_ms, changed_bids, changed_asks)
        self.log.append(update)
        return update

    def top(self, depth: int) -> tuple[list[Level], list[Level]]:
        """The current book's best ``depth`` levels per side (bids descending, asks ascending)."""
        bids = sorted(self.bids.items(), key=lambda lv: lv[0], reverse=True)[:depth]
        asks = sorted(self.asks.items(), key=lambda lv: lv[0])[:depth]
        return bids, asks

    def since(self, after_id: int) -> list[BookUpdate]:
        """Logged updates whose ids end after ``after_id`` (oldest first)."""
        return [u for u in self.log if u.last_id > after_id]


def _diff(old: dict[Decimal, Decimal], new: dict[Decimal, Decimal]) -> dict[Decimal, Decimal]:
    changes = {p: q for p, q in new.items() if old.get(p) != q}
    changes.update({p: Decimal(0) for p in old if p not in new})
    return changes


def merge_updates(updates: list[BookUpdate]) -> tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]:
    """Fold consecutive updates into one (bids, asks) change set, later sizes winning."""
    bids: dict[Decimal, Decimal] = {}
    asks: dict[Decimal, Decimal] = {}
    for u in updates:
        bids.update(u.bids)
        asks.update(u.asks)
    return bids, asks
