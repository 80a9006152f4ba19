"""Async client for the Binance USD-M Futures REST API (`/fapi`): one method per endpoint.

Each method builds its request and reads its answer. The hop itself (each endpoint's
cost in the shared rate budget, the circuit breakers, signing, sending, classifying every
answer into the `exchange.errors` tree) is `SignedRest`'s, in exchange/signed_rest.py.
Timestamps use the exchange's clock: `sync_clock` takes the median offset of several
RTT-midpoint samples.
"""

from __future__ import annotations

import statistics
import time
from asyncio import Lock
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from order_execution.exchange.algo_orders import algo_order_params
from order_execution.exchange.answers import order_state, to_fill, to_report
from order_execution.exchange.breakers import Breakers
from order_execution.exchange.errors import OrderRejected
from order_execution.exchange.http import AiohttpTransport, HttpTransport
from order_execution.exchange.position_mode import POSITION_SIDE_MISMATCH, position_params
from order_execution.exchange.rate_budget import RateBudget
from order_execution.exchange.signed_rest import SignedRest
from order_execution.orders.model import DEFAULT_ACCOUNT, Order, OrderType, decimal_str
from order_execution.runtime.settings import ExchangeSettings

_CLOCK_SAMPLES = 5


class BinanceClient(SignedRest):
    """Signed REST calls. Methods return Binance's JSON or raise an `ExchangeError`."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        secret_key: str,
        recv_window_ms: int = 5000,
        timeout_ms: int = 5000,
        transport: HttpTransport | None = None,
        budget: RateBudget | None = None,
        breakers: Breakers | None = None,
        account: str = DEFAULT_ACCOUNT,
    ) -> None:
        """`account` names the exchange account `api_key` is of, for the metrics' `account` label."""
        http = transport or AiohttpTransport(
            base_url, headers={"X-MBX-APIKEY": api_key}, timeout_s=timeout_ms / 1000
        )
        super().__init__(
            http,
            secret_key=secret_key,
            recv_window_ms=recv_window_ms,
            budget=budget,
            breakers=breakers,
            account=account,
        )
        # One-way (Binance's default) unless `forget_position_mode` makes the next order ask first.
        self._hedge_mode: bool | None = False
        self._mode_lookup = Lock()

    @classmethod
    def from_settings(
        cls,
        settings: ExchangeSettings,
        *,
        budget: RateBudget | None = None,
        breakers: Breakers | None = None,
        account: str = DEFAULT_ACCOUNT,
    ) -> BinanceClient:
        """The client for the configured exchange (base URL, keys, recvWindow, timeout) of the
        exchange account `account`."""
        return cls(
            settings.rest_url,
            api_key=settings.api_key.get_secret_value(),
            secret_key=settings.secret_key.get_secret_value(),
            recv_window_ms=settings.recv_window_ms,
            timeout_ms=settings.request_timeout_ms,
            budget=budget,
            breakers=breakers,
            account=account,
        )

    # --- public endpoints -------------------------------------------------------

    async def server_time(self) -> int:
        data = await self._request("GET", "/fapi/v1/time")
        return int(data["serverTime"])

    async def sync_clock(self, samples: int = _CLOCK_SAMPLES) -> int:
        """Measure and store the exchange clock offset (ms), the median of `samples`; returns it."""
        offsets = []
        for _ in range(samples):
            before = time.time_ns() // 1_000_000
            server = await self.server_time()
            after = time.time_ns() // 1_000_000
            offsets.append(server - (before + after) // 2)
        self.clock_offset_ms = int(statistics.median(offsets))
        return self.clock_offset_ms

    async def exchange_info(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("GET", "/fapi/v1/exchangeInfo")
        return result

    async def premium_index(self) -> list[dict[str, Any]]:
        """GET /fapi/v1/premiumIndex for every symbol (weight 1, unsigned): mark prices."""
        result: list[dict[str, Any]] = await self._request("GET", "/fapi/v1/premiumIndex")
        return result

    # --- orders -----------------------------------------------------------------

    async def new_order(
        self,
        order: Order,
        *,
        deadline_ms: int | None = None,
        after_wait: Callable[[], Awaitable[object]] | None = None,
    ) -> dict[str, Any]:
        """POST /fapi/v1/order with our client id; RESULT reply so MARKET/IOC come back final.

        Raises BudgetExceeded, without sending, if the rate budget cannot let it out
        before `deadline_ms` (Unix ms). If the budget made it wait, `after_wait` runs just
        before the POST (the executor records the real send time there; it may raise to
        stop the send).
        """
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
        params += position_params(order, hedge_mode=await self.hedge_mode(deadline_ms=deadline_ms))
        params += [("newClientOrderId", order.client_order_id), ("newOrderRespType", "RESULT")]
        try:
            reply: dict[str, Any] = await self._request(
                "POST", "/fapi/v1/order", params, deadline_ms=deadline_ms, after_wait=after_wait
            )
        except OrderRejected as exc:
            if exc.code == POSITION_SIDE_MISMATCH:
                self._hedge_mode = None  # the account's mode changed: ask again before the next order
            raise
        return reply

    async def query_order(self, symbol: str, client_order_id: str) -> dict[str, Any]:
        """GET /fapi/v1/order by origClientOrderId; raises OrderNotFoundAtExchange (-2013)."""
        reply: dict[str, Any] = await self._request(
            "GET", "/fapi/v1/order", [("symbol", symbol), ("origClientOrderId", client_order_id)]
        )
        return reply

    async def cancel_order(self, symbol: str, client_order_id: str) -> dict[str, Any]:
        """DELETE /fapi/v1/order by origClientOrderId; raises UnknownOrder (-2011)."""
        reply: dict[str, Any] = await self._request(
            "DELETE", "/fapi/v1/order", [("symbol", symbol), ("origClientOrderId", client_order_id)]
        )
        return reply

    async def open_orders(self) -> list[dict[str, Any]]:
        """GET /fapi/v1/openOrders for every symbol (weight 40): the account's open orders."""
        reply: list[dict[str, Any]] = await self._request("GET", "/fapi/v1/openOrders", [])
        return reply

    async def user_trades(self, symbol: str, exchange_order_id: str) -> list[dict[str, Any]]:
        """GET /fapi/v1/userTrades of one order (weight 5): its fills, oldest first."""
        reply: list[dict[str, Any]] = await self._request(
            "GET", "/fapi/v1/userTrades", [("symbol", symbol), ("orderId", exchange_order_id)]
        )
        return reply

    async def query_order_by_id(self, symbol: str, exchange_order_id: str) -> dict[str, Any]:
        """GET /fapi/v1/order by orderId (a triggered order's); raises OrderNotFoundAtExchange (-2013)."""
        reply: dict[str, Any] = await self._request(
            "GET", "/fapi/v1/order", [("symbol", symbol), ("orderId", exchange_order_id)]
        )
        return reply

    async def cancel_order_by_id(self, symbol: str, exchange_order_id: str) -> dict[str, Any]:
        """DELETE /fapi/v1/order by orderId (a triggered order's); raises UnknownOrder (-2011)."""
        reply: dict[str, Any] = await self._request(
            "DELETE", "/fapi/v1/order", [("symbol", symbol), ("orderId", exchange_order_id)]
        )
        return reply

    async def amend_order(self, order: Order, *, price: Decimal, quantity: Decimal) -> dict[str, Any]:
        """PUT /fapi/v1/order: new price and quantity for a resting LIMIT order (by our client id).

        Raises OrderRejected (-5027 nothing to change, -2011/-2013 gone) like any refusal.
        """
        params = [
            ("symbol", order.symbol),
            ("origClientOrderId", order.client_order_id),
            ("side", str(order.side)),
            ("quantity", decimal_str(quantity)),
            ("price", decimal_str(price)),
        ]
        reply: dict[str, Any] = await self._request("PUT", "/fapi/v1/order", params)
        return reply

    async def cancel_all_orders(self, symbol: str) -> None:
        """DELETE /fapi/v1/allOpenOrders and /fapi/v1/algoOpenOrders of `symbol` (code-200 bodies)."""
        await self._request("DELETE", "/fapi/v1/allOpenOrders", [("symbol", symbol)])
        await self._request("DELETE", "/fapi/v1/algoOpenOrders", [("symbol", symbol)])

    # --- conditional (algo) orders -------------------------------------------------

    async def new_algo_order(
        self,
        order: Order,
        *,
        deadline_ms: int | None = None,
        after_wait: Callable[[], Awaitable[object]] | None = None,
    ) -> dict[str, Any]:
        """POST /fapi/v1/algoOrder (algoType CONDITIONAL) with our client id as clientAlgoId.

        Budget and `after_wait` as in `new_order`; returns the algo order object.
        """
        reply: dict[str, Any] = await self._request(
            "POST",
            "/fapi/v1/algoOrder",
            algo_order_params(
                order, position_params(order, hedge_mode=await self.hedge_mode(deadline_ms=deadline_ms))
            ),
            deadline_ms=deadline_ms,
            after_wait=after_wait,
        )
        return reply

    async def query_algo_order(self, client_algo_id: str) -> dict[str, Any]:
        """GET /fapi/v1/algoOrder by clientAlgoId; raises OrderNotFoundAtExchange (-2013)."""
        reply: dict[str, Any] = await self._request(
            "GET", "/fapi/v1/algoOrder", [("clientAlgoId", client_algo_id)]
        )
        return reply

    async def cancel_algo_order(self, client_algo_id: str) -> dict[str, Any]:
        """DELETE /fapi/v1/algoOrder by clientAlgoId; raises UnknownOrder (-2011) once it fired or ended."""
        reply: dict[str, Any] = await self._request(
            "DELETE", "/fapi/v1/algoOrder", [("clientAlgoId", client_algo_id)]
        )
        return reply

    async def open_algo_orders(self) -> list[dict[str, Any]]:
        """GET /fapi/v1/openAlgoOrders for every symbol (weight 40): algo orders waiting to trigger."""
        reply: list[dict[str, Any]] = await self._request("GET", "/fapi/v1/openAlgoOrders", [])
        return reply

    # --- account settings and the dead-man switch ------------------------------------

    def forget_position_mode(self) -> None:
        """Make the next order ask the exchange for the position mode first (a worker does at start)."""
        self._hedge_mode = None

    async def hedge_mode(self, *, deadline_ms: int | None = None) -> bool:
        """True if the account is in hedge (dual-side) mode: asked (GET positionSide/dual) when not known,
        then remembered until an order meets -4061 (the mode changed).

        Concurrent callers share one request (it weighs 30), whose budget wait ends at `deadline_ms`
        like the order's own would (BudgetExceeded past it).
        """
        async with self._mode_lookup:
            if self._hedge_mode is None:
                reply = await self._request("GET", "/fapi/v1/positionSide/dual", [], deadline_ms=deadline_ms)
                self._hedge_mode = bool(reply["dualSidePosition"])
            return self._hedge_mode

    async def position_mode(self) -> str:
        """Ask the exchange (GET positionSide/dual, weight 30) and remember: "hedge" or "one-way"."""
        self.forget_position_mode()
        return "hedge" if await self.hedge_mode() else "one-way"

    async def set_leverage(self, symbol: str, leverage: int) -> dict[str, Any]:
        """POST /fapi/v1/leverage: `{leverage, maxNotionalValue, symbol}`; OrderRejected (-4028, -2027)."""
        reply: dict[str, Any] = await self._request(
            "POST", "/fapi/v1/leverage", [("symbol", symbol), ("leverage", str(leverage))]
        )
        return reply

    async def set_margin_type(self, symbol: str, margin_type: str) -> None:
        """POST /fapi/v1/marginType (ISOLATED or CROSSED); OrderRejected (-4046 unchanged, -4047, -4048)."""
        await self._request("POST", "/fapi/v1/marginType", [("symbol", symbol), ("marginType", margin_type)])

    async def position_risk(self, symbol: str = "") -> list[dict[str, Any]]:
        """GET /fapi/v2/positionRisk (weight 5): leverage, margin type and position of each symbol/side."""
        reply: list[dict[str, Any]] = await self._request(
            "GET", "/fapi/v2/positionRisk", [("symbol", symbol)] if symbol else []
        )
        return reply

    async def countdown_cancel_all(self, symbol: str, countdown_ms: int) -> None:
        """POST /fapi/v1/countdownCancelAll (weight 10): the exchange cancels every open order of
        `symbol` unless called again within `countdown_ms`; 0 stops the countdown."""
        await self._request(
            "POST", "/fapi/v1/countdownCancelAll", [("symbol", symbol), ("countdownTime", str(countdown_ms))]
        )

    # --- user-data stream ----------------------------------------------------------

    async def create_listen_key(self) -> str:
        """POST /fapi/v1/listenKey: the account's key (the live one, extended, if it has one)."""
        data = await self._request("POST", "/fapi/v1/listenKey")
        return str(data["listenKey"])

    async def keepalive_listen_key(self) -> None:
        """PUT /fapi/v1/listenKey: extend the key 60 min; raises OrderRejected (-1125) if it is gone."""
        await self._request("PUT", "/fapi/v1/listenKey")


__all__ = ["BinanceClient", "order_state", "to_fill", "to_report"]
