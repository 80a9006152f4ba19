"""The aiohttp application: Binance REST routes through the pipeline, the user-data websocket, admin API.

``create_app(config)`` builds a ready-to-run :class:`aiohttp.web.Application`; start it with
``web.run_app`` (see ``usdm_simulator.cli``) or an ``AppRunner``/``TestServer`` in tests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from functools import partial

from aiohttp import web

from usdm_simulator import (
    admin,
    admin_clock,
    algo,
    rest_account,
    rest_account_settings,
    rest_history,
    rest_market,
    rest_trade,
)
from usdm_simulator.admin import STATE_KEY
from usdm_simulator.config import SimulatorConfig
from usdm_simulator.market_streams import MarketStreams
from usdm_simulator.pipeline import Endpoint, dispatch
from usdm_simulator.schedule import run_schedule, tick
from usdm_simulator.state import SimulatorState
from usdm_simulator.walk import run_housekeeping, run_walk

MARKET_STREAMS_KEY = web.AppKey("market_streams", MarketStreams)


def _with_symbol(light: int, heavy: int) -> partial[int]:
    return partial(_symbol_weight, light, heavy)


def _symbol_weight(light: int, heavy: int, params: Mapping[str, str]) -> int:
    return light if params.get("symbol") else heavy


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/fapi/v1/ping", "NONE", rest_account.ping, 1),
    Endpoint("GET", "/fapi/v1/time", "NONE", rest_account.server_time, 1),
    Endpoint("GET", "/fapi/v1/exchangeInfo", "NONE", rest_account.exchange_info_doc, 1),
    Endpoint("GET", "/fapi/v1/premiumIndex", "NONE", rest_account.premium_index, 1),
    Endpoint("GET", "/fapi/v1/ticker/price", "NONE", rest_account.ticker_price, _with_symbol(1, 2)),
    Endpoint("GET", "/fapi/v2/ticker/price", "NONE", rest_account.ticker_price, _with_symbol(1, 2)),
    Endpoint("GET", "/fapi/v1/depth", "NONE", rest_market.depth, rest_market.depth_weight),
    Endpoint("GET", "/fapi/v1/trades", "NONE", rest_market.trades, 5),
    Endpoint("GET", "/fapi/v1/aggTrades", "NONE", rest_market.agg_trades, 20),
    Endpoint("GET", "/fapi/v1/klines", "NONE", rest_market.klines, rest_market.klines_weight),
    Endpoint("GET", "/fapi/v1/markPriceKlines", "NONE", rest_market.price_klines, rest_market.klines_weight),
    Endpoint("GET", "/fapi/v1/indexPriceKlines", "NONE", rest_market.price_klines, rest_market.klines_weight),
    Endpoint("GET", "/fapi/v1/ticker/24hr", "NONE", rest_market.ticker_24hr, _with_symbol(1, 40)),
    Endpoint("GET", "/fapi/v1/ticker/bookTicker", "NONE", rest_market.book_ticker, _with_symbol(2, 5)),
    Endpoint("GET", "/fapi/v1/fundingRate", "NONE", rest_market.funding_rate, 1),
    Endpoint("GET", "/fapi/v1/openInterest", "NONE", rest_market.open_interest, 1),
    Endpoint("POST", "/fapi/v1/order", "SIGNED", rest_trade.new_order, 0, (1, 1)),
    Endpoint("POST", "/fapi/v1/order/test", "SIGNED", rest_trade.test_order, 1),
    Endpoint("GET", "/fapi/v1/order", "SIGNED", rest_trade.query_order, 1),
    Endpoint("DELETE", "/fapi/v1/order", "SIGNED", rest_trade.cancel_order, 1),
    Endpoint("PUT", "/fapi/v1/order", "SIGNED", rest_trade.amend_order, 0, (1, 1)),
    Endpoint("GET", "/fapi/v1/openOrder", "SIGNED", rest_trade.query_open_order, 1),
    Endpoint("GET", "/fapi/v1/openOrders", "SIGNED", rest_trade.open_orders, _with_symbol(1, 40)),
    Endpoint("GET", "/fapi/v1/allOrders", "SIGNED", rest_history.all_orders, 5),
    Endpoint("DELETE", "/fapi/v1/allOpenOrders", "SIGNED", rest_trade.cancel_all, 1),
    Endpoint("POST", "/fapi/v1/batchOrders", "SIGNED", rest_trade.batch_orders, 5, (5, 1)),
    Endpoint("GET", "/fapi/v1/userTrades", "SIGNED", rest_history.user_trades, 5),
    Endpoint("GET", "/fapi/v1/income", "SIGNED", rest_history.income, 30),
    Endpoint("GET", "/fapi/v2/account", "SIGNED", rest_account.account_v2, 5),
    Endpoint("GET", "/fapi/v3/account", "SIGNED", rest_account.account_v3, 5),
    Endpoint("GET", "/fapi/v2/balance", "SIGNED", rest_account.balance_v2, 5),
    Endpoint("GET", "/fapi/v2/positionRisk", "SIGNED", rest_account.position_risk, 5),
    Endpoint("GET", "/fapi/v3/positionRisk", "SIGNED", rest_account.position_risk_v3, 5),
    Endpoint("GET", "/fapi/v1/positionSide/dual", "SIGNED", rest_account_settings.position_mode, 30),
    Endpoint("POST", "/fapi/v1/positionSide/dual", "SIGNED", rest_account_settings.change_position_mode, 1),
    Endpoint("POST", "/fapi/v1/leverage", "SIGNED", rest_account_settings.change_leverage, 1),
    Endpoint("POST", "/fapi/v1/marginType", "SIGNED", rest_account_settings.change_margin_type, 1),
    Endpoint("GET", "/fapi/v1/leverageBracket", "SIGNED", rest_account_settings.leverage_bracket, 1),
    Endpoint("POST", "/fapi/v1/countdownCancelAll", "SIGNED", rest_account_settings.countdown_cancel_all, 10),
    Endpoint("GET", "/fapi/v1/commissionRate", "SIGNED", rest_account.commission_rate, 20),
    Endpoint("GET", "/fapi/v1/rateLimit/order", "SIGNED", rest_account.order_rate_limits, 1),
    Endpoint("POST", "/fapi/v1/listenKey", "USER_STREAM", rest_account.listen_key_create, 1),
    Endpoint("PUT", "/fapi/v1/listenKey", "USER_STREAM", rest_account.listen_key_keepalive, 1),
    Endpoint("DELETE", "/fapi/v1/listenKey", "USER_STREAM", rest_account.listen_key_close, 1),
    Endpoint("POST", "/fapi/v1/algoOrder", "SIGNED", algo.new_algo_order, 0, (1, 1)),
    Endpoint("GET", "/fapi/v1/algoOrder", "SIGNED", algo.query_algo_order, 1),
    Endpoint("DELETE", "/fapi/v1/algoOrder", "SIGNED", algo.cancel_algo_order, 1),
    Endpoint("GET", "/fapi/v1/openAlgoOrders", "SIGNED", algo.open_algo_orders, _with_symbol(1, 40)),
    Endpoint("GET", "/fapi/v1/allAlgoOrders", "SIGNED", algo.all_algo_orders, 5),
    Endpoint("DELETE", "/fapi/v1/algoOpenOrders", "SIGNED", algo.cancel_all_algo_orders, 1),
)


def _route(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await dispatch(request, endpoint, request.app[STATE_KEY])

    handle.__doc__ = f"{endpoint.key} via the Binance pipeline."
    return handle


async def _not_found(request: web.Request) -> web.Response:
    return web.json_response({"code": -5000, "msg": "Path not found"}, status=404)


async def _background(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE_KEY]
    state.engine.price_listeners.append(algo.on_price(state))
    tasks = [
        asyncio.create_task(run_walk(state)),
        asyncio.create_task(run_housekeeping(state)),
        asyncio.create_task(run_schedule(state)),
        asyncio.create_task(app[MARKET_STREAMS_KEY].run()),
    ]
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await state.streams.shutdown()
    await app[MARKET_STREAMS_KEY].shutdown()


def create_app(config: SimulatorConfig) -> web.Application:
    """Return the simulator application for ``config`` (ValueError if it has no account or bad symbols)."""
    state = SimulatorState.build(config, frozenset(e.key for e in ENDPOINTS))
    app = web.Application(handler_args={"tcp_keepalive": True})
    app[STATE_KEY] = state
    for endpoint in ENDPOINTS:
        app.router.add_route(endpoint.method, endpoint.path, _route(endpoint))
    app.router.add_get("/private/ws", state.streams.handle)
    market_streams = app[MARKET_STREAMS_KEY] = MarketStreams(state)
    market_streams.add_routes(app.router)
    admin.add_routes(app)
    admin_clock.add_routes(app)
    state.clock.on_advance(partial(tick, state))
    app.router.add_route("*", "/fapi/{tail:.*}", _not_found)
    app.cleanup_ctx.append(_background)
    return app
