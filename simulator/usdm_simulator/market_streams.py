"""Public market websocket streams: ``/ws/<stream>[/<stream>…]`` (raw events) and
``/stream?streams=a/b`` (combined: ``{"stream": name, "data": event}``), in Binance's USD-M event shapes;
the same under ``/public`` and ``/market`` (Binance's 2026 URL split; every stream is served on each).

Streams (symbol in lower case): ``<s>@aggTrade`` (on every aggregate trade), ``<s>@trade`` (each trade of
it), ``<s>@depth`` and ``<s>@depth@100ms|250ms|500ms`` (diffs with ``U``/``u``/``pu``; 250 ms by default),
``<s>@depth5|10|20`` (+ the same speeds: the top levels), ``<s>@bookTicker`` (when the best level
changes), ``<s>@markPrice`` (every 3 s; ``@markPrice@1s``), ``<s>@kline_<interval>`` (every 250 ms while
it changes, then once closed), ``<s>@ticker`` and ``<s>@miniTicker`` (24 h statistics every 2 s).
``/ws/<name>`` serves a listenKey's user-data stream when ``<name>`` is a live key, else market
streams; an unknown stream name in the URL is 400 ``{"code": -1121}``/-1130;
all-digit path segments (ccxt's ``/ws/0``) are ignored. A connection (``/ws`` and ``/stream`` may name
none) takes SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS / SET_PROPERTY / GET_PROPERTY requests
(``usdm_simulator.stream_requests``). A 100 ms loop produces the timed events.

This module holds the connections, their subscriptions and that loop; the events themselves are built by
``usdm_simulator.stream_events``.

Limits per connection: ``market_ws_max_streams`` (1024; a URL naming more is 400 -1130, a SUBSCRIBE that
would go past it is refused with code 2) and ``market_ws_max_messages_per_s`` (10 incoming frames a wall
second, pings included; the next closes it with 1008 unless ``rate_limits.enabled`` is false).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from usdm_simulator import errors
from usdm_simulator.market import AggTrade
from usdm_simulator.state import SimulatorState
from usdm_simulator.stream_events import agg_trade_event, timed_events, trade_events
from usdm_simulator.stream_names import StreamSub, parse_stream, path_streams
from usdm_simulator.stream_requests import (
    MessageRate,
    StreamRequest,
    StreamRequestError,
    parse_request,
    too_many_streams,
)

TICK_S = 0.1
_ROUTE_PREFIXES = ("", "/public", "/market")


@dataclass(eq=False)
class _Conn:
    ws: web.WebSocketResponse
    request: web.Request
    subs: list[StreamSub]
    combined: bool
    queue: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    user_feeds: dict[str, Callable[[], None]] = field(default_factory=dict)  # listenKey -> stop relay

    def push(self, sub: StreamSub, event: dict[str, Any]) -> None:
        body = {"stream": sub.name, "data": event} if self.combined else event
        self.queue.put_nowait(orjson.dumps(body))

    def push_user_event(self, listen_key: str, payload: str) -> None:
        data = payload.encode()
        self.queue.put_nowait(
            b'{"stream":"%s","data":%s}' % (listen_key.encode(), data) if self.combined else data
        )

    def stop_user_feeds(self, keys: Iterable[str]) -> None:
        for key in keys:
            stop = self.user_feeds.pop(key, None)
            if stop is not None:
                stop()

    def reply(self, frame: dict[str, Any]) -> None:
        self.queue.put_nowait(orjson.dumps(frame))


class MarketStreams:
    """Connections subscribed to market streams and the loop that feeds them."""

    def __init__(self, state: SimulatorState) -> None:
        self._state = state
        self._conns: set[_Conn] = set()
        state.market.agg_listeners.append(self.on_agg_trade)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Serve ``/ws``, ``/ws/<streams>`` (or a listenKey), ``/stream`` and the same under ``/public``
        and ``/market`` (every stream is served on every route)."""
        router.add_get("/ws", self.handle_raw)
        router.add_get("/ws/{listen_key:.+}", self.handle_ws)
        for prefix in _ROUTE_PREFIXES:
            router.add_get(f"{prefix}/stream", self.handle_combined)
            if prefix:
                router.add_get(f"{prefix}/ws", self.handle_raw)
                router.add_get(prefix + "/ws/{tail:.+}", self.handle_raw)

    def on_agg_trade(self, agg: AggTrade) -> None:
        """Push ``aggTrade`` (and per-trade ``trade``) events to every subscriber of the symbol."""
        for conn in list(self._conns):
            for sub in conn.subs:
                if sub.spec.symbol != agg.symbol:
                    continue
                if sub.kind == "aggTrade":
                    conn.push(sub, agg_trade_event(self._state, sub, agg))
                elif sub.kind == "trade":
                    for event in trade_events(self._state, sub, agg):
                        conn.push(sub, event)

    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        """``/ws/<name>``: a live listenKey's user stream, else the market streams named in the path."""
        name = request.match_info["listen_key"]
        if self._state.streams.is_live(name):
            return await self._state.streams.handle(request)
        return await self._serve(request, path_streams(name), combined=False)

    async def handle_raw(self, request: web.Request) -> web.StreamResponse:
        """``[/public|/market]/ws[/<streams>]``: raw market streams, none until the client subscribes if
        the path names none."""
        return await self._serve(request, path_streams(request.match_info.get("tail", "")), combined=False)

    async def handle_combined(self, request: web.Request) -> web.StreamResponse:
        """``/stream?streams=a/b``: the named market streams (or none), each event wrapped with its name."""
        names = [n for n in request.query.get("streams", "").split("/") if n]
        return await self._serve(request, names, combined=True)

    async def _serve(self, request: web.Request, names: list[str], combined: bool) -> web.StreamResponse:
        config = self._state.config
        try:
            subs = self._unique([parse_stream(n, self._state.engine.specs) for n in names])
            if len(subs) > config.market_ws_max_streams:
                raise errors.invalid_parameter("streams")
        except errors.BinanceError as exc:
            return web.json_response(exc.body(), status=400)
        ws = web.WebSocketResponse(autoping=False, heartbeat=None)  # pings count against the rate
        await ws.prepare(request)
        conn = _Conn(ws, request, [], combined)
        self._add(conn, subs)
        self._conns.add(conn)
        sender = asyncio.create_task(self._send(conn))
        rate = MessageRate(config.market_ws_max_messages_per_s) if config.rate_limits.enabled else None
        try:
            async for msg in ws:
                if rate is not None and not rate.admit(time.monotonic()):
                    await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"Too many requests")
                    break
                if msg.type == WSMsgType.PING:
                    await ws.pong(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    self._on_request(conn, msg.data)
        finally:
            conn.stop_user_feeds(list(conn.user_feeds))
            self._conns.discard(conn)
            conn.queue.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sender
        return ws

    @staticmethod
    def _unique(subs: list[StreamSub]) -> list[StreamSub]:
        seen: dict[str, StreamSub] = {}
        for sub in subs:
            seen.setdefault(sub.name, sub)
        return list(seen.values())

    def _add(self, conn: _Conn, subs: list[StreamSub]) -> None:
        """Subscribe ``conn`` to ``subs`` it does not have yet; depth diffs start at the current book."""
        have = {s.name for s in conn.subs}
        fresh = [s for s in subs if s.name not in have]
        for sub in fresh:
            if sub.kind == "depth":
                feed = self._state.market.book(sub.spec.symbol)
                sub.last_u = feed.last_update_id
        conn.subs = [*conn.subs, *fresh]

    def _on_request(self, conn: _Conn, text: str) -> None:
        """Apply one control request (SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET/GET_PROPERTY) and
        queue its reply behind the events already queued."""
        try:
            req = parse_request(text)
            conn.reply(req.reply(self._apply(conn, req)))
        except StreamRequestError as exc:
            conn.reply(exc.reply())

    def _apply(self, conn: _Conn, req: StreamRequest) -> Any:
        if req.method == "SUBSCRIBE":
            subs = []
            for name in req.params:
                if self._state.streams.is_live(name) and name not in conn.user_feeds:
                    push = functools.partial(conn.push_user_event, name)
                    conn.user_feeds[name] = self._state.streams.relay(name, conn.request, push)
                    continue
                if name in conn.user_feeds:
                    continue
                try:
                    subs.append(parse_stream(name, self._state.engine.specs))
                except errors.BinanceError as exc:
                    msg = f"Invalid request: invalid stream name `{name}`"
                    raise StreamRequestError(2, msg, req.request_id) from exc
            limit = self._state.config.market_ws_max_streams
            if len({s.name for s in conn.subs} | {s.name for s in subs}) > limit:
                raise too_many_streams(limit, req.request_id)
            self._add(conn, self._unique(subs))
            return None
        if req.method == "UNSUBSCRIBE":
            gone = set(req.params)
            conn.subs = [s for s in conn.subs if s.name not in gone]
            conn.stop_user_feeds(gone)
            return None
        if req.method == "LIST_SUBSCRIPTIONS":
            return [s.name for s in conn.subs] + list(conn.user_feeds)
        if req.method == "SET_PROPERTY":
            conn.combined = bool(req.params[1])
            return None
        return conn.combined

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
                if sub.kind in ("aggTrade", "trade") or now - sub.last_ms < sub.period_ms:
                    continue
                symbol = sub.spec.symbol
                if symbol not in refreshed and sub.kind in ("depth", "partialDepth", "bookTicker"):
                    self._state.market.book(symbol)
                    refreshed.add(symbol)
                sub.last_ms = now
                for event in timed_events(self._state, sub, now):
                    conn.push(sub, event)

    async def shutdown(self) -> None:
        """Close every market-stream connection (server going away)."""
        for conn in list(self._conns):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await conn.ws.close(code=1001, message=b"server shutdown")
