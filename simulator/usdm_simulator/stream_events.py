"""The events of the public market streams, in Binance's USD-M shapes, built from the simulator's state.

``aggTrade`` and ``trade`` events are built as each aggregate trade happens; the timed events (depth
diffs and partial depth, ``bookTicker``, ``markPriceUpdate``, ``kline``, ``24hrTicker`` and
``24hrMiniTicker``) when a subscription's period has passed. Depth diffs, ``bookTicker`` and ``kline``
come only when their stream changed since the subscription's last event (its cursor: ``StreamSub.last_u``,
``last_key``). The connections that receive them are ``usdm_simulator.market_streams``'.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from usdm_simulator.book import merge_updates
from usdm_simulator.funding import FUNDING_INTERVAL_MS
from usdm_simulator.klines import bucket_end, bucket_start
from usdm_simulator.market import AggTrade
from usdm_simulator.models import fmt
from usdm_simulator.rest_market import ticker_stats
from usdm_simulator.state import SimulatorState
from usdm_simulator.stream_names import StreamSub


def agg_trade_event(state: SimulatorState, sub: StreamSub, agg: AggTrade) -> dict[str, Any]:
    """The ``aggTrade`` event of ``agg`` for subscription ``sub``, stamped now."""
    p, q = sub.spec.price_precision, sub.spec.quantity_precision
    return {
        "e": "aggTrade",
        "E": state.clock.now_ms(),
        "s": agg.symbol,
        "a": agg.agg_id,
        "p": fmt(agg.price, p),
        "q": fmt(agg.qty, q),
        "f": agg.first_id,
        "l": agg.last_id,
        "T": agg.time_ms,
        "m": agg.buyer_maker,
    }


def trade_events(state: SimulatorState, sub: StreamSub, agg: AggTrade) -> list[dict[str, Any]]:
    """One ``trade`` event for each trade ``agg`` aggregates, oldest first, stamped now."""
    p, q = sub.spec.price_precision, sub.spec.quantity_precision
    recent = state.market.trades(agg.symbol)[-(agg.last_id - agg.first_id + 1) :]
    now = state.clock.now_ms()
    return [
        {
            "e": "trade",
            "E": now,
            "T": t.time_ms,
            "s": agg.symbol,
            "t": t.trade_id,
            "p": fmt(t.price, p),
            "q": fmt(t.qty, q),
            "X": "MARKET",
            "m": t.buyer_maker,
        }
        for t in recent
        if agg.first_id <= t.trade_id <= agg.last_id
    ]


def timed_events(state: SimulatorState, sub: StreamSub, now: int) -> list[dict[str, Any]]:
    """The events timed subscription ``sub`` is due at ``now``, advancing its cursor (``last_u``,
    ``last_key``): none for a depth diff, ``bookTicker`` or ``kline`` stream that has not changed."""
    spec, market = sub.spec, state.market
    p, q = spec.price_precision, spec.quantity_precision
    head = {"E": now, "s": spec.symbol}
    if sub.kind in ("depth", "partialDepth"):
        feed = market.feed(spec.symbol)
        if sub.kind == "partialDepth":
            bids, asks = feed.top(sub.levels)
            first = last = feed.last_update_id
            prev = sub.last_u if sub.last_u >= 0 else feed.last_update_id
        else:
            updates = feed.since(sub.last_u)
            if not updates:
                return []
            merged_b, merged_a = merge_updates(updates)
            bids, asks = sorted(merged_b.items(), reverse=True), sorted(merged_a.items())
            first, last, prev = updates[0].first_id, updates[-1].last_id, sub.last_u
        sub.last_u = last
        return [
            {
                "e": "depthUpdate",
                **head,
                "T": feed.updated_ms,
                "U": first,
                "u": last,
                "pu": prev,
                "b": [[fmt(x, p), fmt(y, q)] for x, y in bids],
                "a": [[fmt(x, p), fmt(y, q)] for x, y in asks],
            }
        ]
    if sub.kind == "bookTicker":
        feed = market.feed(spec.symbol)
        (bp, bq), (ap, aq) = feed.top(1)[0][0], feed.top(1)[1][0]
        if sub.last_key == (bp, bq, ap, aq):
            return []
        sub.last_key = (bp, bq, ap, aq)
        return [
            {
                "e": "bookTicker",
                "u": feed.last_update_id,
                **head,
                "T": feed.updated_ms,
                "b": fmt(bp, p),
                "B": fmt(bq, q),
                "a": fmt(ap, p),
                "A": fmt(aq, q),
            }
        ]
    if sub.kind in ("ticker", "miniTicker"):
        return [_ticker_event(sub.kind, head, ticker_stats(state, spec, now))]
    if sub.kind == "markPrice":
        price = state.engine.prices[spec.symbol]
        rate = state.funding.rates.get(spec.symbol, Decimal(0))
        return [
            {
                "e": "markPriceUpdate",
                **head,
                "p": fmt(price, 8),
                "i": fmt(price, 8),
                "P": fmt(price, 8),
                "r": fmt(rate, 8),
                "T": now - now % FUNDING_INTERVAL_MS + FUNDING_INTERVAL_MS,
            }
        ]
    return _kline_events(state, sub, now, head)


def _kline_events(
    state: SimulatorState, sub: StreamSub, now: int, head: dict[str, Any]
) -> list[dict[str, Any]]:
    opened = bucket_start(sub.interval, now)
    out = []
    if isinstance(sub.last_key, tuple) and sub.last_key[0] != opened:
        out.append(_kline(state, sub, sub.last_key[0], head, closed=True))
    event = _kline(state, sub, opened, head, closed=False)
    key = (opened, event["k"]["c"], event["k"]["v"], event["k"]["h"], event["k"]["l"])
    if key != sub.last_key:
        out.append(event)
    sub.last_key = key
    return out


def _kline(
    state: SimulatorState, sub: StreamSub, opened: int, head: dict[str, Any], closed: bool
) -> dict[str, Any]:
    spec = sub.spec
    closes = bucket_end(sub.interval, opened)
    b = state.market.span(spec.symbol, opened, closes)
    p, q = spec.price_precision, spec.quantity_precision
    k = {
        "t": opened,
        "T": closes - 1,
        "s": spec.symbol,
        "i": sub.interval,
        "f": b.first_trade_id,
        "L": b.last_trade_id,
        "o": fmt(b.open, p),
        "c": fmt(b.close, p),
        "h": fmt(b.high, p),
        "l": fmt(b.low, p),
        "v": fmt(b.volume, q),
        "n": b.count,
        "x": closed,
        "q": fmt(b.quote_volume, 5),
        "V": fmt(b.taker_buy_volume, q),
        "Q": fmt(b.taker_buy_quote, 5),
        "B": "0",
    }
    return {"e": "kline", **head, "k": k}


def _ticker_event(kind: str, head: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    """A ``24hrTicker`` (``@ticker``) or ``24hrMiniTicker`` (``@miniTicker``) event, from the numbers
    ``ticker/24hr`` returns."""
    mini = {
        "c": stats["lastPrice"],
        "o": stats["openPrice"],
        "h": stats["highPrice"],
        "l": stats["lowPrice"],
        "v": stats["volume"],
        "q": stats["quoteVolume"],
    }
    if kind == "miniTicker":
        return {"e": "24hrMiniTicker", **head, **mini}
    return {
        "e": "24hrTicker",
        **head,
        "p": stats["priceChange"],
        "P": stats["priceChangePercent"],
        "w": stats["weightedAvgPrice"],
        "Q": stats["lastQty"],
        **mini,
        "O": stats["openTime"],
        "C": stats["closeTime"],
        "F": stats["firstId"],
        "L": stats["lastId"],
        "n": stats["count"],
    }
