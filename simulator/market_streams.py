"""Public market websocket streams: ``/ws/<stream>[/<stream>…]`` (raw events) and
``/stream?streams=a/b`` (combined: ``{"stream": name, "data": event}``), in Binance's USD-M event shapes.

Streams (symbol in lower case): ``<s>@aggTrade`` (on every aggregate trade), ``<s>@depth`` and
``<s>@depth@100ms|250ms|500ms`` (diffs with ``U``/``u``/``pu``; 250 ms by default), ``<s>@depth5|10|20``
(+ the same speeds: the top levels), ``<s>@bookTicker`` (when the best level changes), ``<s>@markPrice``
(every 3 s; ``@markPrice@1s``), ``<s>@kline_<interval>`` (every 250 ms while it changes, then once closed).
``/ws/<name>`` serves a listenKey's user-data stream when ``<name>`` is a live key, else market streams;
an unknown stream name is 400 ``{"code": -1121}``/-1100. A 100 ms loop produces the timed events.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from simulator import errors
from simulator.book import merge_updates
from simulator.funding import FUNDING_INTERVAL_MS
from simulator.klines import INTERVALS, bucket_end, bucket_start
from simulator.market import AggTrade
from simulator.models import fmt
from simulator.state import SimulatorState
from simulator.symbols import SymbolSpec

TICK_S = 0.1
_NAME = re.compile(
    r"^(?P<sym>[a-z0-9]+)@(?:(?P<agg>aggTrade)|(?P<bt>bookTicker)"
    r"|depth(?P<levels>5|10|20)?(?:@(?P<speed>100|250|500)ms)?|markPrice(?P<mark1s>@1s)?"
    r"|kline_(?P<interval>\w+))$"
)


@dataclass(eq=False)
class _Sub:
    name: str
    spec: SymbolSpec
    kind: str
    period_ms: int = 0
    levels: int = 0
    interval: str = ""
    last_ms: int = 0
    last_u: int = -1
    last_key: Any = None


@dataclass(eq=False)
class _Conn:
    ws: web.WebSocketResponse
    subs: list[_Sub]
    combined: bool
    queue: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)

    def push(self, sub: _Sub, event: dict[str, Any]) -> None:
        body = {"stream": sub.name, "data": event} if self.combined else event
        self.queue.put_nowait(orjson.dumps(body))


def _parse(name: str, specs: dict[str, SymbolSpec]) -> _Sub:
    """A subscription for stream ``name``; BinanceError for a name or symbol the simulator does not serve."""
    m = _NAME.match(name)
    if m is None:
        raise errors.invalid_parameter("streams")
    spec = specs.get(m["sym"].upper())
    if spec is None:
        raise errors.error(errors.BAD_SYMBOL)
    if m["agg"]:
        return _Sub(name, spec, "aggTrade")
    if m["bt"]:
        return _Sub(name, spec, "bookTicker", period_ms=100)
    if m["interval"]:
        if m["interval"] not in INTERVALS:
            raise errors.invalid_parameter("streams")
        return _Sub(name, spec, "kline", period_ms=250, interval=m["interval"])
    if name.split("@", 1)[1].startswith("markPrice"):
        return _Sub(name, spec, "markPrice", period_ms=1000 if m["mark1s"] else 3000)
    speed = int(m["speed"] or 250)
    levels = int(m["levels"] or 0)
    return _Sub(name, spec, "partialDepth" if levels else "depth", period_ms=speed, levels=levels)


class MarketStreams:
    """Connections subscribed to market streams and the loop that feeds them."""

    def __init__(self, state: SimulatorState) -> None:
        self._state = state
        self._conns: set[_Conn] = set()
        state.market.agg_listeners.append(self.on_agg_trade)

    def on_agg_trade(self, agg: AggTrade) -> None:
        """Push an ``aggTrade`` event to every subscriber of the symbol."""
        for conn in list(self._conns):
            for sub in conn.subs:
                if sub.kind == "aggTrade" and sub.spec.symbol == agg.symbol:
                    p, q = sub.spec.price_precision, sub.spec.quantity_precision
                    event = {
                        "e": "aggTrade",
                        "E": self._state.clock.now_ms(),
                        "s": agg.symbol,
                        "a": agg.agg_id,
                        "p": fmt(agg.price, p),
                        "q": fmt(agg.qty, q),
                        "f": agg.first_id,
                        "l": agg.last_id,
                        "T": agg.time_ms,
                        "m": agg.buyer_maker,
                    }
                    conn.push(sub, event)

    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        """``/ws/<name>``: a live listenKey's user stream, else the market streams named in the path."""
        name = request.match_info["listen_key"]
        if self._state.streams.is_live(name):
            return await self._state.streams.handle(request)
        return await self._serve(request, name.split("/"), combined=False)

    async def handle_combined(self, request: web.Request) -> web.StreamResponse:
        """``/stream?streams=a/b``: the named market streams, each event wrapped with its stream name."""
        names = [n for n in request.query.get("streams", "").split("/") if n]
        if not names:
            return web.json_response(errors.mandatory("streams").body(), status=400)
        return await self._serve(request, names, combined=True)

    async def _serve(self, request: web.Request, names: list[str], combined: bool) -> web.StreamResponse:
        try:
            subs = [_parse(n, self._state.engine.specs) for n in names]
        except errors.BinanceError as exc:
            return web.json_response(exc.body(), status=400)
        ws = web.WebSocketResponse(autoping=True, heartbeat=None)
        await ws.prepare(request)
        conn = _Conn(ws, subs, combined)
        for sub in subs:
            if sub.kind == "depth":
                feed = self._state.market.book(sub.spec.symbol, self._state.engine.prices[sub.spec.symbol])
                sub.last_u = feed.last_update_id
        self._conns.add(conn)
        sender = asyncio.create_task(self._send(conn))
        try:
            async for _ in ws:
                pass
        finally:
            self._conns.discard(conn)
            conn.queue.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sender
        return ws

    async def _send(self, conn: _Conn) -> None:
        while (payload := await conn.queue.get()) is not None and not conn.ws.closed:
            try:
                await conn.ws.send_str(payload.decode())
            except ConnectionError:
                break

    async def run(self) -> None:
        """Produce the timed events every ``TICK_S`` seconds, forever."""
        while True:
            await asyncio.sleep(TICK_S)
            self.tick()

    def tick(self) -> None:
        """Emit every subscription's event that is due now."""
        now = self._state.clock.now_ms()
        refreshed: set[str] = set()
        for conn in list(self._conns):
            for sub in conn.subs:
                if sub.kind == "aggTrade" or now - sub.last_ms < sub.period_ms:
                    continue
                symbol = sub.spec.symbol
                if symbol not in refreshed and sub.kind in ("depth", "partialDepth", "bookTicker"):
                    self._state.market.book(symbol, self._state.engine.prices[symbol])
                    refreshed.add(symbol)
                sub.last_ms = now
                for event in self._events(sub, now):
                    conn.push(sub, event)

    def _events(self, sub: _Sub, now: int) -> list[dict[str, Any]]:
        spec, market = sub.spec, self._state.market
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
        if sub.kind == "markPrice":
            price = self._state.engine.prices[spec.symbol]
            rate = self._state.funding.rates.get(spec.symbol, Decimal(0))
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
        return self._kline_events(sub, now, head)

    def _kline_events(self, sub: _Sub, now: int, head: dict[str, Any]) -> list[dict[str, Any]]:
        opened = bucket_start(sub.interval, now)
        out = []
        if isinstance(sub.last_key, tuple) and sub.last_key[0] != opened:
            out.append(self._kline(sub, sub.last_key[0], head, closed=True))
        event = self._kline(sub, opened, head, closed=False)
        key = (opened, event["k"]["c"], event["k"]["v"], event["k"]["h"], event["k"]["l"])
        if key != sub.last_key:
            out.append(event)
        sub.last_key = key
        return out

    def _kline(self, sub: _Sub, opened: int, head: dict[str, Any], closed: bool) -> dict[str, Any]:
        spec = sub.spec
        closes = bucket_end(sub.interval, opened)
        b = self._state.market.span(spec.symbol, opened, closes)
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

    async def shutdown(self) -> None:
        """Close every market-stream connection (server going away)."""
        for conn in list(self._conns):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await conn.ws.close(code=1001, message=b"server shutdown")
