"""Admin API for the simulated clock and funding (no auth, JSON), beside ``usdm_simulator.admin``.

* ``GET /admin/clock``: ``{"serverTime", "wallTime", "timeScale", "advancedMs", "nextFundingTime"}``.
* ``POST /admin/clock`` ``{"advance_ms": N}``: jump simulated time forward by N ms (N >= 0), then run the
  schedule at once (funding, listenKey expiry, 24 h connection cap, GTD expiry); replies like GET.
* ``GET /admin/funding``: ``{"rates": {symbol: rate}, "nextFundingTime", "settlements": [...]}``.
* ``POST /admin/funding`` ``{"symbol": "BTCUSDT", "rate": "0.0003"}``: set one symbol's funding rate
  (fraction per 8 h, negative allowed); replies like GET.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web

from usdm_simulator.admin import STATE_KEY, bad_request, read_object
from usdm_simulator.state import SimulatorState


def _clock_doc(state: SimulatorState) -> dict[str, Any]:
    clock = state.clock
    return {
        "serverTime": clock.now_ms(),
        "wallTime": clock.wall_ms(),
        "timeScale": clock.time_scale,
        "advancedMs": clock.advanced_ms,
        "nextFundingTime": state.funding.next_funding_ms,
    }


def _funding_doc(state: SimulatorState) -> dict[str, Any]:
    funding = state.funding
    return {
        "rates": {s: format(r, "f") for s, r in funding.rates.items()},
        "nextFundingTime": funding.next_funding_ms,
        "settlements": [
            {
                "symbol": h.symbol,
                "fundingRate": format(h.rate, "f"),
                "markPrice": format(h.mark_price, "f"),
                "fundingTime": h.time_ms,
            }
            for h in funding.history
        ],
    }


async def get_clock(request: web.Request) -> web.Response:
    """Return the simulated clock's state."""
    return web.json_response(_clock_doc(request.app[STATE_KEY]))


async def advance_clock(request: web.Request) -> web.Response:
    """Advance simulated time by ``advance_ms`` (a non-negative integer); 400 otherwise."""
    state = request.app[STATE_KEY]
    body = await read_object(request)
    ms = body.get("advance_ms")
    if not isinstance(ms, int) or isinstance(ms, bool) or ms < 0:
        return bad_request("advance_ms must be a non-negative integer (milliseconds)")
    state.clock.advance(ms)
    return web.json_response(_clock_doc(state))


async def get_funding(request: web.Request) -> web.Response:
    """Return the funding rates, the next funding time and past settlements."""
    return web.json_response(_funding_doc(request.app[STATE_KEY]))


async def set_funding(request: web.Request) -> web.Response:
    """Set one symbol's funding rate; 400 for an unknown symbol or a rate that is not a decimal."""
    state = request.app[STATE_KEY]
    body = await read_object(request)
    symbol = body.get("symbol")
    if symbol not in state.engine.specs:
        return bad_request(f"unknown symbol {symbol!r}")
    try:
        rate = Decimal(str(body.get("rate")))
    except InvalidOperation:
        return bad_request('rate must be a decimal string, e.g. "0.0001"')
    if not rate.is_finite():
        return bad_request("rate must be finite")
    state.funding.set_rate(symbol, rate)
    return web.json_response(_funding_doc(state))


def add_routes(app: web.Application) -> None:
    """Register the clock and funding admin routes on ``app``."""
    app.router.add_get("/admin/clock", get_clock)
    app.router.add_post("/admin/clock", advance_clock)
    app.router.add_get("/admin/funding", get_funding)
    app.router.add_post("/admin/funding", set_funding)
