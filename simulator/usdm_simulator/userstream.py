"""The user-data stream: listenKey lifecycle and the websocket that pushes account events.

* One listenKey per account. ``POST`` returns the account's live key (extending it) or a new one; ``PUT``
  extends it (-1125 if it does not exist); ``DELETE`` ends it. A key lives ``listen_key_ttl_s`` (3600)
  seconds of simulated time (``ExchangeClock.sim_ms``, so ``time_scale`` and ``POST /admin/clock`` shorten
  it in wall time); on expiry each connection on it gets ``listenKeyExpired`` and then nothing more.
* A connection lasts at most ``MAX_CONNECTION_MS`` (24 h) of simulated time, keepalives or not: then the
  server closes it (close frame 1000), as Binance does; the key stays valid for a new connection.
* Websockets at ``/private/ws?listenKey=…[&events=A/B]`` (only the listed event types are sent;
  ``listenKeyExpired`` always is) and the legacy ``/ws/<listenKey>``; the server pings every
  ``ws_ping_interval_s`` and answers client pings. Each connection has a queue and a sender task, so events
  leave in the order the engine produced them.
* ``TRADE_LITE`` (Binance's trade-only event) goes, just before the fill's ``ORDER_TRADE_UPDATE``, only to
  connections that list it in ``events=``; connections without ``events=`` keep the older event set.
* Faults: ``user_stream_silent`` swallows an event, ``user_stream_drop`` cuts the TCP connection abruptly
  (no close frame) instead of delivering it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from usdm_simulator import errors
from usdm_simulator.clock import ExchangeClock
from usdm_simulator.config import SimulatorConfig
from usdm_simulator.events import listen_key_expired, trade_lite
from usdm_simulator.faults import USER_STREAM_KINDS, FaultRegistry

MAX_CONNECTION_MS = 24 * 3600 * 1000


@dataclass(eq=False)
class _Connection:
    ws: web.WebSocketResponse | None  # None: relayed into a market-stream connection (``relay``)
    request: web.Request
    listen_key: str
    events: frozenset[str] | None = None
    opened_ms: int = 0
    queue: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)

    def abort(self) -> None:
        transport = self.request.transport
        if transport is not None:
            transport.abort()
        self.queue.put_nowait(None)


class UserStreams:
    """listenKeys per account and the websocket connections subscribed to them."""

    def __init__(self, config: SimulatorConfig, clock: ExchangeClock, faults: FaultRegistry) -> None:
        self._config = config
        self._clock = clock
        self._faults = faults
        self._key_of: dict[str, str] = {}
        self._account_of: dict[str, str] = {}
        self._expires: dict[str, int] = {}
        self._conns: dict[str, set[_Connection]] = {}
        self.delivered = 0

    # ------------------------------------------------------------- listenKey
    def _deadline(self) -> int:
        """Simulated ms at which a key created or kept alive now expires."""
        return self._clock.sim_ms() + int(self._config.listen_key_ttl_s * 1000)

    def create(self, account: str) -> str:
        """Return the account's live listenKey (extended) or a new 64-character one."""
        key = self._key_of.get(account)
        if key is None:
            key = secrets.token_urlsafe(48)[:64]
            self._key_of[account], self._account_of[key] = key, account
        self._expires[key] = self._deadline()
        return key

    def keepalive(self, account: str) -> str:
        """Extend the account's listenKey by its full lifetime; -1125 if it has none."""
        key = self._key_of.get(account)
        if key is None:
            raise errors.error(errors.INVALID_LISTEN_KEY)
        self._expires[key] = self._deadline()
        return key

    def close(self, account: str) -> None:
        """Invalidate the account's listenKey (if any) and close its connections."""
        key = self._key_of.pop(account, None)
        if key is None:
            return
        self._account_of.pop(key, None)
        self._expires.pop(key, None)
        for conn in list(self._conns.get(key, ())):
            conn.queue.put_nowait(None)

    def is_live(self, key: str | None) -> bool:
        """True if ``key`` is a listenKey that exists and has not expired."""
        return key is not None and key in self._account_of

    def expire_due(self) -> None:
        """Expire keys past their deadline, telling their connections with ``listenKeyExpired``."""
        now = self._clock.sim_ms()
        for key, deadline in list(self._expires.items()):
            if deadline <= now:
                account = self._account_of.pop(key)
                self._key_of.pop(account, None)
                del self._expires[key]
                payload = json.dumps(listen_key_expired(key, self._clock.now_ms()))
                for conn in self._conns.get(key, ()):
                    conn.queue.put_nowait(payload)

    def close_aged(self) -> None:
        """Close every connection open for ``MAX_CONNECTION_MS`` of simulated time (Binance's 24 h cap)."""
        cutoff = self._clock.sim_ms() - MAX_CONNECTION_MS
        for conns in self._conns.values():
            for conn in list(conns):
                if conn.opened_ms <= cutoff:
                    conn.queue.put_nowait(None)

    def reset(self) -> None:
        """Forget all keys and close all connections."""
        for account in list(self._key_of):
            self.close(account)

    # ------------------------------------------------------------- events
    def has_listeners(self, account: str) -> bool:
        """True if a websocket is connected on the account's live listenKey."""
        key = self._key_of.get(account)
        return bool(key and self._conns.get(key))

    def publish(self, account: str, event: dict[str, Any]) -> None:
        """Queue ``event`` for every connection on the account's live listenKey (faults permitting)."""
        key = self._key_of.get(account)
        conns = self._conns.get(key) if key else None
        if not conns:
            return
        payload = orjson.dumps(event).decode()
        lite: str | None = None
        for conn in list(conns):
            if conn.events is not None and "TRADE_LITE" in conn.events and _is_fill(event):
                lite = lite or orjson.dumps(trade_lite(event)).decode()
                conn.queue.put_nowait(lite)
                self.delivered += 1
            if conn.events is not None and event.get("e") not in conn.events:
                continue
            fired = self._faults.draw("WS /private/ws", USER_STREAM_KINDS)
            kinds = {f.kind for f in fired}
            if "user_stream_drop" in kinds:
                conn.abort()
            elif "user_stream_silent" not in kinds:
                conn.queue.put_nowait(payload)
                self.delivered += 1

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one websocket at ``/private/ws?listenKey=`` or ``/ws/<listenKey>``; 400/-1125 if bad key."""
        key = request.query.get("listenKey") or request.match_info.get("listen_key")
        if not self.is_live(key) or key is None:
            err = errors.error(errors.INVALID_LISTEN_KEY)
            return web.json_response(err.body(), status=400)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        wanted = request.query.get("events")
        events = frozenset(e for e in wanted.split("/") if e) if wanted else None
        conn = _Connection(ws, request, key, events, opened_ms=self._clock.sim_ms())
        self._conns.setdefault(key, set()).add(conn)
        sender = asyncio.create_task(self._send_loop(conn.queue, ws))
        pinger = asyncio.create_task(self._ping_loop(ws))
        try:
            async for _ in ws:
                pass
        finally:
            self._conns.get(key, set()).discard(conn)
            conn.queue.put_nowait(None)
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sender
        return ws

    def relay(self, key: str, request: web.Request, push: Callable[[str], None]) -> Callable[[], None]:
        """Deliver the live listenKey ``key``'s events to ``push`` until the returned function is called.

        For a market-stream connection that subscribes the listenKey as a stream (Binance accepts it, and
        binance-futures-connector's websocket client does so); faults apply as on ``/private/ws``.
        """
        conn = _Connection(None, request, key, opened_ms=self._clock.sim_ms())
        self._conns.setdefault(key, set()).add(conn)

        async def pump() -> None:
            while (payload := await conn.queue.get()) is not None:
                push(payload)

        task = asyncio.create_task(pump())

        def stop() -> None:
            self._conns.get(key, set()).discard(conn)
            task.cancel()

        return stop

    async def _send_loop(self, queue: asyncio.Queue[str | None], ws: web.WebSocketResponse) -> None:
        while True:
            payload = await queue.get()
            if payload is None or ws.closed:
                break
            try:
                await ws.send_str(payload)
            except ConnectionError:
                break
        if not ws.closed:
            await ws.close()

    async def _ping_loop(self, ws: web.WebSocketResponse) -> None:
        while not ws.closed:
            await asyncio.sleep(self._config.ws_ping_interval_s)
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.ping(b"ping")

    async def shutdown(self) -> None:
        """Close every connection (server going away)."""
        for conns in list(self._conns.values()):
            for conn in list(conns):
                if conn.ws is None:
                    continue  # relayed: its market-stream connection is closed by its own server
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await conn.ws.close(code=1001, message=b"server shutdown")


def _is_fill(event: dict[str, Any]) -> bool:
    """True for an ``ORDER_TRADE_UPDATE`` that reports a fill (execution type TRADE)."""
    return event.get("e") == "ORDER_TRADE_UPDATE" and event.get("o", {}).get("x") == "TRADE"
