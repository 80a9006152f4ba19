"""Handlers of the public market-data endpoints (Binance's USD-M shapes), over ``usdm_simulator.market``.

Parameters are checked as Binance does: a missing ``symbol`` is -1102, an unknown one -1121, a bad
``interval`` -1120, a non-integer or out-of-range ``limit``/time -1130. Prices and quantities are decimal
strings with the symbol's precision; times are Unix ms. Weights live in ``app.ENDPOINTS`` (``*_weight``).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from usdm_simulator import errors
from usdm_simulator.book import mix, symbol_key
from usdm_simulator.errors import BinanceError
from usdm_simulator.funding import DEFAULT_FUNDING_RATE, FUNDING_INTERVAL_MS
from usdm_simulator.klines import INTERVALS, Bar
from usdm_simulator.models import fmt
from usdm_simulator.pipeline import Call
from usdm_simulator.state import SimulatorState
from usdm_simulator.symbols import SymbolSpec

DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
_DAY_MS = 86_400_000


# ---------------------------------------------------------------- weights
def depth_weight(params: Mapping[str, str]) -> int:
    """2 for limit 5-50, 5 for 100, 10 for 500 (the default), 20 for 1000."""
    limit = _depth_limit(params.get("limit"))
    return 2 if limit <= 50 else 5 if limit == 100 else 10 if limit == 500 else 20


def klines_weight(params: Mapping[str, str]) -> int:
    """By limit (default 500): [1,100) 1, [100,500) 2, [500,1000] 5, above 10."""
    try:
        limit = int(params.get("limit", "500"))
    except ValueError:
        limit = 500
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


# ---------------------------------------------------------------- parameters
def _depth_limit(raw: str | None) -> int:
    """The smallest valid depth limit at or above ``raw`` (default 500; above 1000 is 1000)."""
    try:
        wanted = int(raw) if raw is not None else 500
    except ValueError:
        return 500
    return next((x for x in DEPTH_LIMITS if x >= wanted), 1000)


def _spec(call: Call) -> SymbolSpec:
    symbol = call.params.get("symbol")
    if not symbol:
        raise errors.mandatory("symbol")
    spec = call.state.engine.specs.get(symbol)
    if spec is None:
        raise errors.error(errors.BAD_SYMBOL)
    return spec


def _specs(call: Call) -> list[SymbolSpec]:
    """The one symbol asked for, or every symbol when ``symbol`` is absent."""
    if "symbol" in call.params:
        return [_spec(call)]
    return list(call.state.engine.specs.values())


def _int(call: Call, name: str, default: int | None = None, lo: int = 0, hi: int | None = None) -> int | None:
    raw = call.params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise errors.invalid_parameter(name) from None
    if value < lo or (hi is not None and value > hi):
        raise errors.invalid_parameter(name)
    return value


def _limit(call: Call, default: int, hi: int) -> int:
    value = _int(call, "limit", default, 1, hi)
    assert value is not None
    return value


def _one_or_all(call: Call, docs: list[dict[str, Any]]) -> Any:
    return docs[0] if "symbol" in call.params else docs


# ---------------------------------------------------------------- book
def depth(call: Call) -> dict[str, Any]:
    """``GET /fapi/v1/depth``: ``lastUpdateId``, ``E``, ``T`` and the best ``limit`` bids and asks."""
    spec = _spec(call)
    limit = _depth_limit(call.params.get("limit"))
    feed = call.state.market.book(spec.symbol)
    bids, asks = feed.top(limit)
    now = call.state.clock.now_ms()
    return {
        "lastUpdateId": feed.last_update_id,
        "E": now,
        "T": feed.updated_ms,
        "bids": [[fmt(p, spec.price_precision), fmt(q, spec.quantity_precision)] for p, q in bids],
        "asks": [[fmt(p, spec.price_precision), fmt(q, spec.quantity_precision)] for p, q in asks],
    }


def book_ticker(call: Call) -> Any:
    """``GET /fapi/v1/ticker/bookTicker``: best bid/ask with sizes, one symbol or all."""
    docs = []
    for spec in _specs(call):
        feed = call.state.market.book(spec.symbol)
        bids, asks = feed.top(1)
        (bp, bq), (ap, aq) = bids[0], asks[0]
        docs.append(
            {
                "symbol": spec.symbol,
                "bidPrice": fmt(bp, spec.price_precision),
                "bidQty": fmt(bq, spec.quantity_precision),
                "askPrice": fmt(ap, spec.price_precision),
                "askQty": fmt(aq, spec.quantity_precision),
                "time": feed.updated_ms,
                "lastUpdateId": feed.last_update_id,
            }
        )
    return _one_or_all(call, docs)


# ---------------------------------------------------------------- trades
def trades(call: Call) -> list[dict[str, Any]]:
    """``GET /fapi/v1/trades``: the latest ``limit`` (default 500, max 1000) public trades, oldest first."""
    spec = _spec(call)
    limit = _limit(call, 500, 1000)
    rows = call.state.market.trades(spec.symbol)[-limit:]
    p, q = spec.price_precision, spec.quantity_precision
    return [
        {
            "id": t.trade_id,
            "price": fmt(t.price, p),
            "qty": fmt(t.qty, q),
            "quoteQty": fmt(t.price * t.qty, p + q),
            "time": t.time_ms,
            "isBuyerMaker": t.buyer_maker,
        }
        for t in rows
    ]


def agg_trades(call: Call) -> list[dict[str, Any]]:
    """``GET /fapi/v1/aggTrades``: from ``fromId``, or within ``startTime``..``endTime``, else the latest;
    at most ``limit`` (default 500, max 1000), oldest first."""
    spec = _spec(call)
    limit = _limit(call, 500, 1000)
    from_id = _int(call, "fromId")
    start, end = _int(call, "startTime"), _int(call, "endTime")
    rows = call.state.market.agg_trades(spec.symbol)
    if from_id is not None:
        rows = [a for a in rows if a.agg_id >= from_id][:limit]
    elif start is not None or end is not None:
        rows = [
            a for a in rows if (start is None or a.time_ms >= start) and (end is None or a.time_ms <= end)
        ]
        rows = rows[:limit] if start is not None else rows[-limit:]
    else:
        rows = rows[-limit:]
    p, q = spec.price_precision, spec.quantity_precision
    return [
        {
            "a": a.agg_id,
            "p": fmt(a.price, p),
            "q": fmt(a.qty, q),
            "f": a.first_id,
            "l": a.last_id,
            "T": a.time_ms,
            "m": a.buyer_maker,
        }
        for a in rows
    ]


# ---------------------------------------------------------------- klines
def _bars(call: Call) -> tuple[SymbolSpec, list[Bar]]:
    spec = _spec(call)
    interval = call.params.get("interval")
    if not interval:
        raise errors.mandatory("interval")
    if interval not in INTERVALS:
        raise BinanceError(-1120, "Invalid interval.")
    limit = _limit(call, 500, 1500)
    start, end = _int(call, "startTime"), _int(call, "endTime")
    return spec, call.state.market.klines(spec.symbol, interval, start, end, limit)


def klines(call: Call) -> list[list[Any]]:
    """``GET /fapi/v1/klines``: [openTime, open, high, low, close, volume, closeTime, quoteVolume, trades,
    takerBuyBase, takerBuyQuote, "0"] per bar (the open bar's close time is still its bucket end - 1)."""
    spec, bars = _bars(call)
    p, q = spec.price_precision, spec.quantity_precision
    return [
        [
            b.open_ms,
            fmt(b.open, p),
            fmt(b.high, p),
            fmt(b.low, p),
            fmt(b.close, p),
            fmt(b.volume, q),
            b.close_ms - 1,
            fmt(b.quote_volume, 5),
            b.count,
            fmt(b.taker_buy_volume, q),
            fmt(b.taker_buy_quote, 5),
            "0",
        ]
        for b in bars
    ]


def price_klines(call: Call) -> list[list[Any]]:
    """``GET /fapi/v1/markPriceKlines`` and ``indexPriceKlines``: the reference price's OHLC (mark = index
    here) with zeros where volumes would be and the number of one-second samples as the count."""
    spec, bars = _bars(call)
    p = spec.price_precision
    now = call.state.clock.now_ms()
    return [
        [
            b.open_ms,
            fmt(b.open, p),
            fmt(b.high, p),
            fmt(b.low, p),
            fmt(b.close, p),
            "0",
            b.close_ms - 1,
            "0",
            (min(b.close_ms, now + 1) - b.open_ms) // 1000,
            "0",
            "0",
            "0",
        ]
        for b in bars
    ]


# ---------------------------------------------------------------- tickers and derivatives
def ticker_24hr(call: Call) -> Any:
    """``GET /fapi/v1/ticker/24hr``: rolling 24 h statistics from the bars, one symbol or all."""
    now = call.state.clock.now_ms()
    return _one_or_all(call, [ticker_stats(call.state, spec, now) for spec in _specs(call)])


def ticker_stats(state: SimulatorState, spec: SymbolSpec, now: int) -> dict[str, Any]:
    """One symbol's rolling 24 h statistics up to ``now``, as ``ticker/24hr`` returns them (the
    ``@ticker`` and ``@miniTicker`` streams send the same numbers)."""
    opened = now - _DAY_MS
    bar = state.market.span(spec.symbol, opened, now + 1)
    last = state.engine.prices[spec.symbol]
    recent = state.market.trades(spec.symbol)
    p, q = spec.price_precision, spec.quantity_precision
    change = last - bar.open
    return {
        "symbol": spec.symbol,
        "priceChange": fmt(change, p),
        "priceChangePercent": fmt(change / bar.open * 100, 3),
        "weightedAvgPrice": fmt(bar.quote_volume / bar.volume if bar.volume else last, p),
        "lastPrice": fmt(last, p),
        "lastQty": fmt(recent[-1].qty if recent else Decimal(0), q),
        "openPrice": fmt(bar.open, p),
        "highPrice": fmt(max(bar.high, last), p),
        "lowPrice": fmt(min(bar.low, last), p),
        "volume": fmt(bar.volume, q),
        "quoteVolume": fmt(bar.quote_volume, 2),
        "openTime": opened,
        "closeTime": now,
        "firstId": bar.first_trade_id,
        "lastId": bar.last_trade_id,
        "count": bar.count,
    }


def funding_rate(call: Call) -> list[dict[str, Any]]:
    """``GET /fapi/v1/fundingRate``: settlements every 8 h, oldest first; from ``startTime`` on, else the
    latest ``limit`` (default 100, max 1000) up to ``endTime``. Times before the simulator started carry
    the default rate and the synthetic past's price; later ones are the funding schedule's settlements."""
    specs = _specs(call)
    limit = _limit(call, 100, 1000)
    now = call.state.clock.now_ms()
    start, end = _int(call, "startTime"), _int(call, "endTime")
    last = min(end if end is not None else now, now)
    last -= last % FUNDING_INTERVAL_MS
    settled = {(h.symbol, h.time_ms): h for h in call.state.funding.history}
    started = call.state.market.started_ms
    rows: list[dict[str, Any]] = []
    t = last
    first = start if start is not None else last - FUNDING_INTERVAL_MS * limit
    while t >= first:
        for spec in specs:
            h = settled.get((spec.symbol, t))
            if h is not None:
                rate, mark = h.rate, h.mark_price
            elif t <= started:
                rate, mark = DEFAULT_FUNDING_RATE, call.state.market.price_at(spec.symbol, t)
            else:
                continue
            rows.append(
                {
                    "symbol": spec.symbol,
                    "fundingTime": t,
                    "fundingRate": fmt(rate, 8),
                    "markPrice": fmt(mark, 8),
                }
            )
        t -= FUNDING_INTERVAL_MS
    rows.sort(key=lambda r: (r["fundingTime"], r["symbol"]))
    return rows[:limit] if start is not None else rows[-limit:]


def open_interest(call: Call) -> dict[str, Any]:
    """``GET /fapi/v1/openInterest``: a seeded base of about 300 M USDT (BTC) drifting hour by hour, plus the
    long side of the simulator's own positions."""
    spec = _spec(call)
    state = call.state
    now = state.clock.now_ms()
    price = state.engine.prices[spec.symbol]
    drift = Decimal(900 + mix(state.config.seed, symbol_key(spec.symbol), now // 3_600_000) % 200) / 1000
    base = Decimal(300_000_000 if spec.symbol == "BTCUSDT" else 40_000_000) * drift / price
    ours = sum(
        (
            p.amount
            for a in state.engine.accounts.values()
            for s, p in a.every_position()
            if s == spec.symbol and p.amount > 0
        ),
        Decimal(0),
    )
    units = (base / spec.step_size).to_integral_value() * spec.step_size + ours
    return {"symbol": spec.symbol, "openInterest": fmt(units, spec.quantity_precision), "time": now}
