"""Public market data: trades printed as the reference price moves, one-minute bars, klines, the book.

``MarketData`` listens to reference-price changes (the walk, ``POST /admin/price``). Each change prints
1-3 public trades at the new price (taker buys when the price rose, sells when it fell; sizes seeded by
trade id) which form one aggregate trade, and moves the current one-minute bar. The last 24 h of bars are
kept; earlier klines come from ``SyntheticPast``. In book mode those trades also reach our resting orders
(``market_trade_listeners``), and our orders' own fills are printed on the tape (``print_trades``). Books
come from the engine (one ``DepthFeed`` per symbol, refreshed on demand).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from itertools import groupby, islice

from usdm_simulator.book import DepthFeed, Level, mix, symbol_key, unit
from usdm_simulator.clock import ExchangeClock
from usdm_simulator.klines import (
    MINUTE_MS,
    Bar,
    SyntheticPast,
    bucket_before,
    bucket_end,
    bucket_start,
    flat_bar,
    merge,
)
from usdm_simulator.symbols import SymbolSpec

HISTORY_MINUTES = 1440
TRADES_KEPT = 1000
FIRST_PUBLIC_TRADE_ID = 5_000_000_001


@dataclass(frozen=True, slots=True)
class PublicTrade:
    """One public trade (``GET /fapi/v1/trades``)."""

    trade_id: int
    price: Decimal
    qty: Decimal
    time_ms: int
    buyer_maker: bool


@dataclass(frozen=True, slots=True)
class AggTrade:
    """Trades of one taker at one price (``GET /fapi/v1/aggTrades``, ``@aggTrade``)."""

    agg_id: int
    symbol: str
    price: Decimal
    qty: Decimal
    first_id: int
    last_id: int
    time_ms: int
    buyer_maker: bool


AggTradeListener = Callable[[AggTrade], None]
# (symbol, price, quantity, taker sold): a trade of the outside market, which may fill resting orders.
MarketTradeListener = Callable[[str, Decimal, Decimal, bool], None]
LevelSource = Callable[[str, int], tuple[list[Level], list[Level]]]


@dataclass
class _Tape:
    spec: SymbolSpec
    past: SyntheticPast
    current: Bar
    last_price: Decimal
    bars: deque[Bar] = field(default_factory=lambda: deque(maxlen=HISTORY_MINUTES))
    trades: deque[PublicTrade] = field(default_factory=lambda: deque(maxlen=TRADES_KEPT))
    aggs: deque[AggTrade] = field(default_factory=lambda: deque(maxlen=TRADES_KEPT))


class MarketData:
    """Trades, bars and books of every symbol; fed by reference-price changes, read by REST and streams."""

    def __init__(
        self, specs: dict[str, SymbolSpec], seed: int, clock: ExchangeClock, levels: LevelSource
    ) -> None:
        """``levels`` gives a symbol's book at a time (bids, asks; best first) for the depth feeds."""
        self._specs = specs
        self._seed = seed
        self._clock = clock
        self._levels = levels
        self.agg_listeners: list[AggTradeListener] = []
        self.market_trade_listeners: list[MarketTradeListener] = []
        self._tapes: dict[str, _Tape] = {}
        self._feeds: dict[str, DepthFeed] = {}
        self._next_trade_id = FIRST_PUBLIC_TRADE_ID
        self._next_agg_id = FIRST_PUBLIC_TRADE_ID
        self.started_ms = 0

    def start(self, prices: dict[str, Decimal]) -> None:
        """(Re)start the history now at ``prices``: no trades, bars from this minute on, a fresh book."""
        now = self._clock.now_ms()
        minute = now - now % MINUTE_MS
        self.started_ms = now
        self._tapes = {
            s: _Tape(
                spec,
                SyntheticPast(spec, self._seed, minute, prices[s]),
                flat_bar(minute, minute + MINUTE_MS, prices[s]),
                prices[s],
            )
            for s, spec in self._specs.items()
        }
        self._feeds = {s: DepthFeed(spec, self._seed) for s, spec in self._specs.items()}

    # ------------------------------------------------------------------ recording
    def _roll(self, tape: _Tape, now_ms: int) -> None:
        """Close finished minutes (flat while nothing traded) so ``current`` holds ``now_ms``."""
        behind = (now_ms - tape.current.open_ms) // MINUTE_MS
        if behind <= 0:
            return
        if behind > HISTORY_MINUTES + 1:
            # Idle for more than the history: restart it, the synthetic past bridging the gap.
            skip = (behind - HISTORY_MINUTES - 1) * MINUTE_MS
            opened = tape.current.open_ms + skip
            tape.bars.clear()
            tape.current = flat_bar(opened, opened + MINUTE_MS, tape.current.close)
            tape.past.anchor_ms, tape.past.anchor_price = opened, tape.current.open
        while tape.current.close_ms <= now_ms:
            if len(tape.bars) == HISTORY_MINUTES:
                dropped = tape.bars[0]
                tape.past.anchor_ms, tape.past.anchor_price = dropped.close_ms, dropped.close
            tape.bars.append(tape.current)
            tape.current = flat_bar(
                tape.current.close_ms, tape.current.close_ms + MINUTE_MS, tape.current.close
            )

    def on_price(self, symbol: str, price: Decimal) -> None:
        """Print the public trades of a reference-price change to ``price`` and notify listeners."""
        tape = self._tapes.get(symbol)
        if tape is None:
            return
        key = symbol_key(symbol)
        if price != tape.last_price:
            buyer_maker = price < tape.last_price
        else:
            buyer_maker = mix(self._seed, key, self._next_trade_id) % 2 == 0
        sizes = []
        for i in range(1 + mix(self._seed, key, self._next_trade_id) % 3):
            notional = 200 + 4800 * unit(self._seed, key, self._next_trade_id + i) ** 2
            steps = (Decimal(int(notional)) / price / tape.spec.step_size).to_integral_value(ROUND_FLOOR)
            sizes.append(max(tape.spec.min_qty, steps * tape.spec.step_size))
        agg = self._print(tape, price, sizes, buyer_maker)
        tape.last_price = price
        for listener in list(self.market_trade_listeners):
            listener(symbol, price, agg.qty, buyer_maker)

    def print_trades(self, symbol: str, fills: list[Level], taker_bought: bool) -> None:
        """Put one of our orders' fills on the tape: one trade per (price, qty), one aggregate per price."""
        tape = self._tapes.get(symbol)
        if tape is None:
            return
        for price, group in groupby(fills, key=lambda fill: fill[0]):
            self._print(tape, price, [qty for _, qty in group], not taker_bought)

    def _print(self, tape: _Tape, price: Decimal, sizes: list[Decimal], buyer_maker: bool) -> AggTrade:
        """Record trades of ``sizes`` at ``price`` as one aggregate trade; tell the stream listeners."""
        now = self._clock.now_ms()
        self._roll(tape, now)
        tape.current.move(price)
        first_id = self._next_trade_id
        for qty in sizes:
            trade = PublicTrade(self._next_trade_id, price, qty, now, buyer_maker)
            tape.trades.append(trade)
            tape.current.add_trade(trade.trade_id, price, qty, not buyer_maker)
            self._next_trade_id += 1
        agg = AggTrade(
            self._next_agg_id,
            tape.spec.symbol,
            price,
            sum(sizes, Decimal(0)),
            first_id,
            self._next_trade_id - 1,
            now,
            buyer_maker,
        )
        self._next_agg_id += 1
        tape.aggs.append(agg)
        for listener in list(self.agg_listeners):
            listener(agg)
        return agg

    # ------------------------------------------------------------------ reading
    def trades(self, symbol: str) -> list[PublicTrade]:
        """The last ``TRADES_KEPT`` public trades of ``symbol``, oldest first."""
        return list(self._tapes[symbol].trades)

    def agg_trades(self, symbol: str) -> list[AggTrade]:
        """The last ``TRADES_KEPT`` aggregate trades of ``symbol``, oldest first."""
        return list(self._tapes[symbol].aggs)

    def span(self, symbol: str, open_ms: int, close_ms: int) -> Bar:
        """One bar over ``[open_ms, close_ms)``: synthetic before the history, recorded minutes after."""
        tape = self._tapes[symbol]
        self._roll(tape, self._clock.now_ms())
        parts: list[Bar] = []
        anchor = tape.past.anchor_ms
        if open_ms < anchor:
            parts.append(tape.past.bar(open_ms, min(close_ms, anchor)))
        if close_ms > anchor:
            parts.extend(self._recorded(tape, max(open_ms, anchor), close_ms))
        if not parts:
            return flat_bar(open_ms, close_ms, tape.past.price_at(open_ms))
        return merge(parts, open_ms, close_ms)

    def _recorded(self, tape: _Tape, open_ms: int, close_ms: int) -> list[Bar]:
        out: list[Bar] = []
        if tape.bars:
            base = tape.bars[0].open_ms
            lo = max(0, (open_ms - base + MINUTE_MS - 1) // MINUTE_MS)
            hi = max(lo, (close_ms - base + MINUTE_MS - 1) // MINUTE_MS)
            out.extend(islice(tape.bars, lo, hi))
        if open_ms <= tape.current.open_ms < close_ms:
            out.append(tape.current)
        return out

    def klines(
        self, symbol: str, interval: str, start_ms: int | None, end_ms: int | None, limit: int
    ) -> list[Bar]:
        """Up to ``limit`` ``interval`` bars, oldest first: from ``start_ms`` on (open time >= start), else
        the latest ones up to ``end_ms`` (or now). Never a bucket that has not opened yet."""
        now = self._clock.now_ms()
        last = bucket_start(interval, now if end_ms is None else min(end_ms, now))
        opens: list[int] = []
        if start_ms is not None:
            t = bucket_start(interval, start_ms)
            if t < start_ms:
                t = bucket_end(interval, t)
            while t <= last and len(opens) < limit:
                opens.append(t)
                t = bucket_end(interval, t)
        else:
            t = last
            while len(opens) < limit:
                opens.append(t)
                t = bucket_before(interval, t)
            opens.reverse()
        return [self.span(symbol, t, bucket_end(interval, t)) for t in opens]

    def price_at(self, symbol: str, t_ms: int) -> Decimal:
        """The reference price in effect at ``t_ms`` (the close of the minute before it, if recorded)."""
        tape = self._tapes[symbol]
        if t_ms < tape.past.anchor_ms:
            return tape.past.price_at(t_ms)
        minute = t_ms - t_ms % MINUTE_MS
        bars = self._recorded(tape, minute, minute + MINUTE_MS)
        return bars[0].open if bars else tape.last_price

    def book(self, symbol: str) -> DepthFeed:
        """``symbol``'s depth feed brought up to now."""
        feed = self._feeds[symbol]
        # One instant for both: the levels are the book at the time the feed stamps (depth's ``T``).
        now = self._clock.now_ms()
        feed.refresh(self._levels(symbol, now), now)
        return feed

    def feed(self, symbol: str) -> DepthFeed:
        """``symbol``'s depth feed as last refreshed."""
        return self._feeds[symbol]
