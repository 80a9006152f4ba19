"""Async client for the Binance USD-M Futures REST API (`/fapi`).

One `httpx.AsyncClient` per process keeps connections alive. Every response is
classified into the `exchange.errors` tree here and nowhere else. Timestamps use the
exchange's clock: `sync_clock` measures the offset with an RTT midpoint.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import httpx

from exchange.errors import (
    ClockSkew,
    DuplicateClientOrderId,
    ExchangeError,
    ExchangeUnavailable,
    OrderNotFoundAtExchange,
    OrderRejected,
    OutcomeUnknown,
    RateLimited,
    UnknownOrder,
)
from exchange.signing import signed_query
from orders.fsm import ExchangeReport
from orders.model import Fill, Order, OrderState, OrderType, decimal_str
from orders.settings import ExchangeSettings

_OUTCOME_UNKNOWN_CODES = {-1000, -1006, -1007}
_NOT_EXECUTED_CODES = {-1008, -1003, -1015}


class BinanceClient:
    """Signed REST calls. Methods return Binance's JSON or raise an `ExchangeError`."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        secret_key: str,
        recv_window_ms: int = 5000,
        timeout_ms: int = 5000,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._secret = secret_key
        self._recv_window = str(recv_window_ms)
        self.clock_offset_ms = 0
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"X-MBX-APIKEY": api_key},
            timeout=httpx.Timeout(timeout_ms / 1000),
            limits=httpx.Limits(max_keepalive_connections=32, max_connections=64),
            transport=transport,
        )

    @classmethod
    def from_settings(cls, settings: ExchangeSettings) -> BinanceClient:
        """The client for the configured exchange (base URL, keys, recvWindow, timeout)."""
        return cls(
            settings.rest_url,
            api_key=settings.api_key.get_secret_value(),
            secret_key=settings.secret_key.get_secret_value(),
            recv_window_ms=settings.recv_window_ms,
            timeout_ms=settings.request_timeout_ms,
        )

    async def close(self) -> None:
        await self._http.aclose()

    # --- public endpoints -------------------------------------------------------

    async def server_time(self) -> int:
        data = await self._request("GET", "/fapi/v1/time")
        return int(data["serverTime"])

    async def sync_clock(self) -> int:
        """Measure and store the exchange clock offset (ms); returns it."""
        before = time.time_ns() // 1_000_000
        server = await self.server_time()
        after = time.time_ns() // 1_000_000
        self.clock_offset_ms = server - (before + after) // 2
        return self.clock_offset_ms

    async def exchange_info(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("GET", "/fapi/v1/exchangeInfo")
        return result

    # --- orders -----------------------------------------------------------------

    async def new_order(self, order: Order) -> dict[str, Any]:
        """POST /fapi/v1/order with our client id; RESULT reply so MARKET/IOC come back final."""
        params = [
            ("symbol", order.symbol),
            ("side", str(order.side)),
            ("type", str(order.type)),
            ("quantity", decimal_str(order.quantity)),
        ]
        if order.type is OrderType.LIMIT:
            assert order.price is not None and order.exchange_time_in_force is not None
            params += [
                ("price", decimal_str(order.price)),
                ("timeInForce", str(order.exchange_time_in_force)),
            ]
        if order.reduce_only:
            params.append(("reduceOnly", "true"))
        params += [("newClientOrderId", order.client_order_id), ("newOrderRespType", "RESULT")]
        reply: dict[str, Any] = await self._signed("POST", "/fapi/v1/order", params)
        return reply

    async def query_order(self, symbol: str, client_order_id: str) -> dict[str, Any]:
        """GET /fapi/v1/order by origClientOrderId; raises OrderNotFoundAtExchange (-2013)."""
        reply: dict[str, Any] = await self._signed(
            "GET", "/fapi/v1/order", [("symbol", symbol), ("origClientOrderId", client_order_id)]
        )
        return reply

    async def cancel_order(self, symbol: str, client_order_id: str) -> dict[str, Any]:
        """DELETE /fapi/v1/order by origClientOrderId; raises UnknownOrder (-2011)."""
        reply: dict[str, Any] = await self._signed(
            "DELETE", "/fapi/v1/order", [("symbol", symbol), ("origClientOrderId", client_order_id)]
        )
        return reply

    async def open_orders(self) -> list[dict[str, Any]]:
        """GET /fapi/v1/openOrders for every symbol (weight 40): the account's open orders."""
        reply: list[dict[str, Any]] = await self._signed("GET", "/fapi/v1/openOrders", [])
        return reply

    async def user_trades(self, symbol: str, exchange_order_id: str) -> list[dict[str, Any]]:
        """GET /fapi/v1/userTrades of one order (weight 5): its fills, oldest first."""
        reply: list[dict[str, Any]] = await self._signed(
            "GET", "/fapi/v1/userTrades", [("symbol", symbol), ("orderId", exchange_order_id)]
        )
        return reply

    # --- user-data stream ----------------------------------------------------------

    async def create_listen_key(self) -> str:
        """POST /fapi/v1/listenKey: the account's key (the live one, extended, if it has one)."""
        data = await self._request("POST", "/fapi/v1/listenKey")
        return str(data["listenKey"])

    async def keepalive_listen_key(self) -> None:
        """PUT /fapi/v1/listenKey: extend the key 60 min; raises OrderRejected (-1125) if it is gone."""
        await self._request("PUT", "/fapi/v1/listenKey")

    # --- plumbing ----------------------------------------------------------------

    async def _signed(self, method: str, path: str, params: list[tuple[str, str]]) -> Any:
        timestamp = time.time_ns() // 1_000_000 + self.clock_offset_ms
        params = [*params, ("recvWindow", self._recv_window), ("timestamp", str(timestamp))]
        return await self._request(method, f"{path}?{signed_query(params, self._secret)}")

    async def _request(self, method: str, url: str) -> Any:
        read_only = method == "GET"  # a GET executes nothing, so its failure is not ambiguous
        try:
            response = await self._http.request(method, url)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise ExchangeUnavailable(f"could not reach the exchange: {exc!r}") from exc
        except httpx.TransportError as exc:
            if read_only:
                raise ExchangeUnavailable(f"{method} {url.split('?')[0]} failed: {exc!r}") from exc
            raise OutcomeUnknown(f"no answer to {method} {url.split('?')[0]}: {exc!r}") from exc
        if response.status_code == 200:
            return response.json()
        raise _classify(response)


def _classify(response: httpx.Response) -> ExchangeError:
    """Map a non-200 response to the most specific ExchangeError."""
    status = response.status_code
    code: int | None = None
    message = response.text[:200]
    try:
        body = response.json()
        if isinstance(body, dict) and "code" in body:
            code = int(body["code"])
            message = str(body.get("msg", ""))
    except (json.JSONDecodeError, ValueError):
        pass
    text = f"HTTP {status}" + (f" {code}" if code is not None else "") + f": {message}"

    if status in (418, 429):
        retry_after = _retry_after_s(response)
        return RateLimited(text, retry_after_s=retry_after, code=code, status=status)
    if code in _OUTCOME_UNKNOWN_CODES or "Unknown error" in message:
        return OutcomeUnknown(text, code=code, status=status)
    if code == -1021:
        return ClockSkew(text, code=code, status=status)
    if code in _NOT_EXECUTED_CODES or (status == 503 and "Service Unavailable" in message) or status == 403:
        return ExchangeUnavailable(text, code=code, status=status)
    if status >= 500:
        return OutcomeUnknown(text, code=code, status=status)
    if code == -2013:
        return OrderNotFoundAtExchange(text, code=code, status=status)
    if code == -2011:
        return UnknownOrder(text, code=code, status=status)
    if code == -4116:
        return DuplicateClientOrderId(text, code=code, status=status)
    return OrderRejected(text, code=code, status=status)


def _retry_after_s(response: httpx.Response) -> float:
    header = response.headers.get("Retry-After")
    try:
        return max(float(header), 0.0) if header else 1.0
    except ValueError:
        return 1.0


_STATUS = {
    "NEW": OrderState.SUBMITTED,
    "PARTIALLY_FILLED": OrderState.PARTIALLY_FILLED,
    "FILLED": OrderState.FILLED,
    "CANCELED": OrderState.CANCELED,
    "EXPIRED": OrderState.EXPIRED,
    "EXPIRED_IN_MATCH": OrderState.EXPIRED,
    "REJECTED": OrderState.REJECTED,
}


def order_state(status: str) -> OrderState:
    """Our state for a Binance order status (`X`); raises ExchangeError for one we do not know."""
    if status not in _STATUS:
        raise ExchangeError(f"unexpected order status {status!r}")
    return _STATUS[status]


def to_report(reply: dict[str, Any], fills: tuple[Fill, ...] = ()) -> ExchangeReport:
    """An ExchangeReport from a Binance order object (new, query or cancel reply), with `fills`.

    Raises ExchangeError for a status we do not know, rather than guessing.
    """
    status = str(reply.get("status", ""))
    return ExchangeReport(
        state=order_state(status),
        filled_quantity=Decimal(str(reply.get("executedQty", "0"))),
        average_price=Decimal(str(reply.get("avgPrice", "0"))),
        exchange_order_id=str(reply.get("orderId", "")),
        reason=f"exchange status {status}" if status == "REJECTED" else "",
        fills=fills,
    )


def to_fill(trade: dict[str, Any]) -> Fill:
    """A Fill from a `userTrades` row."""
    return Fill(
        trade_id=str(trade["id"]),
        quantity=Decimal(str(trade["qty"])),
        price=Decimal(str(trade["price"])),
        fee=Decimal(str(trade.get("commission", "0"))),
        fee_asset=str(trade.get("commissionAsset", "")),
        maker=bool(trade.get("maker", False)),
        time=int(trade.get("time", 0)),
    )
