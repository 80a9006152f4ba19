"""Binance's user-data stream: the account's order events as they happen.

`UserStream.run` holds one websocket at a time for as long as it is told to:
* a listenKey from `POST /fapi/v1/listenKey`, kept alive with `PUT` every
  `keepalive_interval_s` (Binance: valid 60 min; peers refresh every 30);
* `<stream base>/private/ws?listenKey=<key>&events=ORDER_TRADE_UPDATE/ALGO_UPDATE` (the
  current URL); ALGO_UPDATE reports conditional orders, keyed by our clientAlgoId;
* pings the socket every `heartbeat_s`: no pong within half of that and it is presumed dead;
* reconnects with a capped exponential backoff after any failure, at once after
  `listenKeyExpired`, and before Binance's 24 h cap (`reconnect_after_s`);
* `on_connect` runs after every (re)connection, once the socket is open, so whatever
  happened while it was down can be reconciled without missing what comes next.

Events are parsed into `OrderEvent`s here; what they do to orders is the caller's business.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
import orjson

from order_execution.exchange.algo_orders import algo_event_report
from order_execution.exchange.answers import order_state
from order_execution.exchange.client import BinanceClient
from order_execution.exchange.errors import ExchangeError
from order_execution.orders.fsm import ExchangeReport
from order_execution.orders.model import Fill

log = logging.getLogger(__name__)

_EVENTS = "ORDER_TRADE_UPDATE/ALGO_UPDATE/ACCOUNT_UPDATE"


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """One ORDER_TRADE_UPDATE: which order (by our client id), and what the exchange reports."""

    client_order_id: str
    symbol: str
    report: ExchangeReport
    event_time: int
    conditional: bool = False  # an ALGO_UPDATE: `client_order_id` is the clientAlgoId
    amended: tuple[Decimal, Decimal] | None = None  # an AMENDMENT: the order's new (price, quantity)


def parse_algo_event(event: dict[str, Any]) -> OrderEvent:
    """An OrderEvent from an ALGO_UPDATE payload; raises KeyError/ValueError/ExchangeError if malformed."""
    o = event["o"]
    return OrderEvent(str(o["caid"]), str(o["s"]), algo_event_report(o), int(event.get("E", 0)), True)


def parse_order_event(event: dict[str, Any]) -> OrderEvent:
    """An OrderEvent from an ORDER_TRADE_UPDATE payload; raises KeyError/ValueError if malformed.

    A TRADE execution (`x`) carries its fill (`t`, `l`, `L`, `n`, `N`, `m`, `T`), an AMENDMENT
    the order's new price (`p`) and quantity (`q`);
    `z` and `ap` are cumulative, so events apply in any order and more than once.
    """
    o = event["o"]
    fills: tuple[Fill, ...] = ()
    if o.get("x") == "TRADE" and int(o.get("t", 0)):
        fills = (
            Fill(
                trade_id=str(o["t"]),
                quantity=Decimal(str(o["l"])),
                price=Decimal(str(o["L"])),
                fee=Decimal(str(o.get("n") or "0")),
                fee_asset=str(o.get("N") or ""),
                maker=bool(o.get("m", False)),
                time=int(o.get("T", event.get("T", 0))),
            ),
        )
    report = ExchangeReport(
        state=order_state(str(o["X"])),
        filled_quantity=Decimal(str(o.get("z", "0"))),
        average_price=Decimal(str(o.get("ap", "0"))),
        exchange_order_id=str(o.get("i", "")),
        reason="exchange status REJECTED" if o["X"] == "REJECTED" else "",
        fills=fills,
    )
    amended = (Decimal(str(o["p"])), Decimal(str(o["q"]))) if o.get("x") == "AMENDMENT" else None
    return OrderEvent(str(o["c"]), str(o["s"]), report, int(event.get("E", 0)), amended=amended)


_PARSERS: dict[str, Callable[[dict[str, Any]], OrderEvent]] = {
    "ORDER_TRADE_UPDATE": parse_order_event,
    "ALGO_UPDATE": parse_algo_event,
}


class UserStream:
    """Keeps the user-data stream connected; see the module docstring."""

    def __init__(
        self,
        exchange: BinanceClient,
        stream_base_url: str,
        *,
        keepalive_interval_s: float = 1800,
        reconnect_after_s: float = 23.5 * 3600,
        backoff_max_s: float = 10.0,
        heartbeat_s: float = 30.0,
        on_account: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ) -> None:
        self._exchange = exchange
        self._on_account = on_account  # gets each ACCOUNT_UPDATE payload (positions, balances)
        self._base = stream_base_url.rstrip("/")
        self._keepalive_s = keepalive_interval_s
        self._reconnect_after_s = reconnect_after_s
        self._backoff_max_s = backoff_max_s
        self._heartbeat_s = heartbeat_s
        self.connected = False
        self.connections = 0

    async def run(
        self,
        on_event: Callable[[OrderEvent], Awaitable[None]],
        on_connect: Callable[[], Awaitable[None]],
    ) -> None:
        """Deliver every order event to `on_event` until cancelled; never returns otherwise."""
        backoff = 0.2
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    await self._one_connection(session, on_event, on_connect)
                    backoff = 0.2  # a planned reconnect (expiry, 24 h) goes again at once
                    continue
                except (aiohttp.ClientError, ExchangeError, OSError, TimeoutError) as exc:
                    log.warning("user-data stream lost (%r); reconnecting in %.1f s", exc, backoff)
                finally:
                    self.connected = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._backoff_max_s)

    async def _one_connection(
        self,
        session: aiohttp.ClientSession,
        on_event: Callable[[OrderEvent], Awaitable[None]],
        on_connect: Callable[[], Awaitable[None]],
    ) -> None:
        listen_key = await self._exchange.create_listen_key()
        url = f"{self._base}/private/ws?listenKey={listen_key}&events={_EVENTS}"
        # Our pings, not only Binance's every 3 min: a path that died without a FIN or RST (a host
        # or link lost) shows as a missing pong within heartbeat_s / 2, and the stream reconnects.
        async with session.ws_connect(url, autoping=True, heartbeat=self._heartbeat_s) as ws:
            self.connected = True
            self.connections += 1
            log.info("user-data stream connected (connection %d)", self.connections)
            keepalive = asyncio.create_task(self._keep_alive())
            try:
                await on_connect()
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel that
                # lands as the socket closes, and run() would then reconnect instead of stopping.
                async with asyncio.timeout(self._reconnect_after_s):
                    await self._receive(ws, on_event)
            except TimeoutError:
                log.info("user-data stream reconnecting before the 24 h limit")
            finally:
                keepalive.cancel()

    async def _receive(
        self, ws: aiohttp.ClientWebSocketResponse, on_event: Callable[[OrderEvent], Awaitable[None]]
    ) -> None:
        """Read until the socket closes or the key expires (then return to reconnect)."""
        async for message in ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            try:
                payload: dict[str, Any] = orjson.loads(message.data)
            except ValueError:
                log.warning("user-data stream: ignoring a frame that is not JSON: %.200s", message.data)
                continue
            kind = payload.get("e")
            if kind == "listenKeyExpired":
                log.warning("user-data stream: listenKey expired; reconnecting with a new one")
                return
            if kind == "ACCOUNT_UPDATE":
                if self._on_account is not None:
                    await self._on_account(payload)
                continue
            parse = _PARSERS.get(str(kind))
            if parse is None:
                continue
            try:
                event = parse(payload)
            except (KeyError, ValueError, ExchangeError) as exc:
                log.error("user-data stream: malformed %s (%r): %.300s", kind, exc, message.data)
                continue
            await on_event(event)
        why = f": {ws.exception()!r}" if ws.exception() else ""  # e.g. no PONG within heartbeat_s / 2
        raise ConnectionError(f"websocket closed ({ws.close_code}{why})")

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self._keepalive_s)
            try:
                await self._exchange.keepalive_listen_key()
            except ExchangeError as exc:
                log.warning("listenKey keepalive failed (%s); the stream reconnects if the key lapses", exc)
