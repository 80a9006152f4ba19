"""The outside market's resting liquidity that our orders trade against in book mode.

Each symbol's book is the synthetic one of ``usdm_simulator.book`` less what our taker orders have taken
from it. A taken level stays depleted until ``REFILL_MS`` of exchange time after its last take, when the
market's makers are assumed to have replaced it. The displayed book (REST ``depth`` and the depth streams)
is that plus the quantity our own resting orders add at their prices.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

from usdm_simulator.book import EPOCH_MS, MAX_LEVELS, BookSide, Level, level_size_at, side_levels
from usdm_simulator.clock import ExchangeClock
from usdm_simulator.symbols import SymbolSpec

REFILL_MS = 1000
_FIRST_DEPTH = 2
_PRUNE_AT = 4096


@dataclass(slots=True)
class _Taken:
    qty: Decimal
    at_ms: int


class MarketLiquidity:
    """Synthetic levels per symbol and side, less the quantities recently taken by our orders."""

    def __init__(self, specs: dict[str, SymbolSpec], seed: int, clock: ExchangeClock) -> None:
        self._specs = specs
        self._seed = seed
        self._clock = clock
        self._taken: dict[tuple[str, BookSide, Decimal], _Taken] = {}
        # (symbol, side) -> ((ref, epoch), levels, whether that is the whole side)
        self._cache: dict[tuple[str, BookSide], tuple[tuple[Decimal, int], list[Level], bool]] = {}

    def reset(self) -> None:
        """Forget every take: the whole synthetic book is back."""
        self._taken.clear()

    def walk(self, symbol: str, ref: Decimal, side: BookSide) -> Iterator[Level]:
        """The levels of ``side`` best first with what is left of each (empty levels skipped).

        Computes a few levels first and more only if the caller keeps walking, so a small order costs a
        handful of levels, not the thousand the book holds.
        """
        now = self._clock.now_ms()
        depth = _FIRST_DEPTH
        seen = 0
        while True:
            levels = self.levels(symbol, ref, side, now, depth)
            for price, qty in levels[seen:]:
                if qty > 0:
                    yield price, qty
            if len(levels) < depth or depth >= MAX_LEVELS:
                return
            seen, depth = len(levels), min(depth * 8, MAX_LEVELS)

    def levels(
        self, symbol: str, ref: Decimal, side: BookSide, now_ms: int, depth: int = MAX_LEVELS
    ) -> list[Level]:
        """The best ``depth`` synthetic levels of ``side`` at ``now_ms``, with takes subtracted (a level
        may show 0)."""
        levels = self._synthetic(symbol, ref, side, depth, now_ms)
        if not self._taken:
            return levels
        return [(price, self._left(symbol, side, price, qty, now_ms)) for price, qty in levels]

    def _synthetic(self, symbol: str, ref: Decimal, side: BookSide, depth: int, now_ms: int) -> list[Level]:
        # The synthetic book only changes with the reference price and the EPOCH_MS period, so orders
        # arriving within one period share one computation (it costs ~10 us a level).
        epoch = now_ms // EPOCH_MS
        cached = self._cache.get((symbol, side))
        if cached is not None and cached[0] == (ref, epoch) and (len(cached[1]) >= depth or cached[2]):
            return cached[1][:depth]
        levels = side_levels(self._specs[symbol], self._seed, ref, now_ms, side, depth)
        self._cache[(symbol, side)] = ((ref, epoch), levels, len(levels) < depth)
        return levels

    def level_qty(self, symbol: str, ref: Decimal, side: BookSide, price: Decimal, now_ms: int) -> Decimal:
        """What is left at ``price`` on ``side`` at ``now_ms`` (0 off the book)."""
        qty = level_size_at(self._specs[symbol], self._seed, ref, now_ms, side, price)
        return self._left(symbol, side, price, qty, now_ms) if qty else qty

    def take(self, symbol: str, side: BookSide, price: Decimal, qty: Decimal) -> None:
        """Record that our order took ``qty`` from the level at ``price``."""
        now = self._clock.now_ms()
        key = (symbol, side, price)
        taken = self._taken.get(key)
        if taken is None or now - taken.at_ms >= REFILL_MS:
            if len(self._taken) >= _PRUNE_AT:
                self._taken = {k: t for k, t in self._taken.items() if now - t.at_ms < REFILL_MS}
            self._taken[key] = _Taken(qty, now)
        else:
            taken.qty += qty
            taken.at_ms = now

    def _left(self, symbol: str, side: BookSide, price: Decimal, qty: Decimal, now_ms: int) -> Decimal:
        key = (symbol, side, price)
        taken = self._taken.get(key)
        if taken is None:
            return qty
        if now_ms - taken.at_ms >= REFILL_MS:
            del self._taken[key]
            return qty
        return max(qty - taken.qty, Decimal(0))
