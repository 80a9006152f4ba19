"""The admin HTTP API under ``/admin/`` (no auth): steer prices, inspect orders/requests, arm faults.

* ``POST /admin/price`` ``{"symbol","price"[,"liquidity"]}``: set the reference price (and optionally the
  per-match liquidity, ``null`` = unlimited) and match resting orders at once. Replies with the prices.
* ``GET /admin/prices``: every reference price and liquidity setting.
* ``GET /admin/orders`` (``symbol``, ``clientOrderId``, ``account``, ``status``): every accepted order.
* ``GET /admin/algo-orders`` (``clientAlgoId``, ``account``): every algo (conditional) order.
* ``GET /admin/trades`` (``symbol``, ``account``): every fill.
* ``GET /admin/requests`` (``path``, ``method``, ``clientOrderId``, ``account``, ``status``,
  ``errorCode``): every REST request; e.g. ``?account=KEY&status=429`` counts an account's 429s.
* ``POST /admin/faults`` (a FaultConfig) → the armed fault; ``GET /admin/faults``; ``DELETE /admin/faults``.
* ``POST /admin/reset``: clear orders, trades, positions, requests, faults, counters and listenKeys.
* ``GET /admin/state``: accounts with wallet, positions (hedge-mode ones as ``SYMBOL:LONG``), position
  mode, leverage and margin-type settings, the symbols whose countdownCancelAll timer runs, and the ORDERS
  limits and counts of the current windows.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from usdm_simulator.config import FaultConfig
from usdm_simulator.state import SimulatorState

STATE_KEY: web.AppKey[SimulatorState] = web.AppKey("simulator_state", SimulatorState)


def _state(request: web.Request) -> SimulatorState:
    return request.app[STATE_KEY]


def bad_request(message: str) -> web.Response:
    """HTTP 400 with ``{"error": message}``, as every admin call answers bad input."""
    return web.json_response({"error": message}, status=400)


async def read_object(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body; raises HTTP 400 ``{"error": ...}`` if it is not one."""
    try:
        data = await request.json()
    except json.JSONDecodeError as exc:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"invalid JSON: {exc}"}), content_type="application/json"
        ) from exc
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body must be a JSON object"}), content_type="application/json"
        )
    return data


def _prices(state: SimulatorState) -> dict[str, Any]:
    engine = state.engine
    return {
        s: {
            "price": format(p, "f"),
            "liquidity": format(engine.liquidity[s], "f") if s in engine.liquidity else None,
        }
        for s, p in engine.prices.items()
    }


async def set_price(request: web.Request) -> web.Response:
    """Set a symbol's reference price (and liquidity) and run matching."""
    state = _state(request)
    body = await read_object(request)
    symbol = body.get("symbol")
    if symbol not in state.engine.specs:
        return bad_request(f"unknown symbol {symbol!r}")
    if "liquidity" in body:
        if body["liquidity"] is None:
            state.engine.liquidity.pop(symbol, None)
        else:
            try:
                state.engine.liquidity[symbol] = Decimal(str(body["liquidity"]))
            except InvalidOperation:
                return bad_request("liquidity must be a decimal string or null")
    if "price" in body:
        try:
            price = Decimal(str(body["price"]))
        except InvalidOperation:
            return bad_request("price must be a decimal string")
        if not price.is_finite() or price <= 0:
            return bad_request("price must be positive")
        state.engine.set_price(symbol, price)
    return web.json_response(_prices(state))


async def get_prices(request: web.Request) -> web.Response:
    """Return every reference price and liquidity setting."""
    return web.json_response(_prices(_state(request)))


async def list_orders(request: web.Request) -> web.Response:
    """List every order the simulator accepted, oldest first, with the owning account key."""
    q = request.query
    rows = []
    for order in _state(request).engine.orders:
        if q.get("symbol") and order.symbol != q["symbol"]:
            continue
        if q.get("clientOrderId") and order.client_order_id != q["clientOrderId"]:
            continue
        if q.get("account") and order.account_key != q["account"]:
            continue
        if q.get("status") and order.status != q["status"]:
            continue
        rows.append({**order.to_json(), "account": order.account_key})
    return web.json_response(rows)


async def list_algo_orders(request: web.Request) -> web.Response:
    """List every algo (conditional) order, oldest first, with the owning account key; the order a
    triggered one placed is `actualOrderId` (find it in /admin/orders by `orderId`)."""
    q = request.query
    rows = [
        {**order.to_json(), "account": order.account_key}
        for order in sorted(_state(request).algos.orders.values(), key=lambda o: o.algo_id)
        if (not q.get("clientAlgoId") or order.client_algo_id == q["clientAlgoId"])
        and (not q.get("account") or order.account_key == q["account"])
    ]
    return web.json_response(rows)


async def list_trades(request: web.Request) -> web.Response:
    """List every fill, oldest first."""
    q = request.query
    rows: list[dict[str, Any]] = []
    for account in _state(request).engine.accounts.values():
        if q.get("account") and account.key != q["account"]:
            continue
        rows.extend(
            {**t.to_json(), "account": account.key, "clientOrderId": t.order.client_order_id}
            for t in account.trades
            if not q.get("symbol") or t.order.symbol == q["symbol"]
        )
    rows.sort(key=lambda r: r["id"])
    return web.json_response(rows)


async def list_requests(request: web.Request) -> web.Response:
    """List every REST request received, oldest first, filtered by the query parameters; 400 for a
    ``status`` or ``errorCode`` that is not an integer."""
    try:
        records = _state(request).journal.select(request.query)
    except ValueError as exc:
        return bad_request(str(exc))
    return web.json_response([r.to_json() for r in records])


async def arm_fault(request: web.Request) -> web.Response:
    """Arm one fault (FaultConfig JSON); 400 naming the bad field if invalid."""
    body = await read_object(request)
    try:
        spec = FaultConfig.model_validate(body)
    except ValidationError as exc:
        return bad_request(str(exc))
    try:
        armed = _state(request).faults.arm(spec)
    except ValueError as exc:
        return bad_request(str(exc))
    return web.json_response(armed.to_json())


async def list_faults(request: web.Request) -> web.Response:
    """List the armed faults."""
    return web.json_response([f.to_json() for f in _state(request).faults.listing()])


async def clear_faults(request: web.Request) -> web.Response:
    """Disarm every fault."""
    _state(request).faults.clear()
    return web.json_response({"cleared": True})


async def reset(request: web.Request) -> web.Response:
    """Reset the exchange to its starting state."""
    _state(request).reset()
    return web.json_response({"reset": True})


async def describe(request: web.Request) -> web.Response:
    """Return accounts (wallet, positions) for debugging."""
    state = _state(request)
    accounts = [
        {
            "key": a.key,
            "wallet": format(a.wallet, "f"),
            "positions": {
                (s if p.position_side == "BOTH" else f"{s}:{p.position_side}"): {
                    "amount": format(p.amount, "f"),
                    "entryPrice": format(p.entry_price, "f"),
                }
                for s, p in a.every_position()
            },
            "dualSidePosition": a.dual_side,
            "leverage": {s: a.leverage_for(s) for s in state.engine.specs},
            "isolated": sorted(a.isolated),
            "countdowns": [s for k, s in state.countdowns.armed() if k == a.key],
            "orderLimits": _order_limits(state, a.key),
        }
        for a in state.engine.accounts.values()
    ]
    return web.json_response(
        {"accounts": accounts, "prices": _prices(state), "serverTime": state.clock.now_ms()}
    )


def _order_limits(state: SimulatorState, key: str) -> dict[str, int]:
    """The account's ORDERS limits and how much of each window it has used."""
    limits = state.limiter.order_limits(key)
    used10, used60 = state.limiter.order_counts(key)
    return {"per10s": limits.per_10s, "perMinute": limits.per_minute, "used10s": used10, "used1m": used60}


def add_routes(app: web.Application) -> None:
    """Register the admin routes on ``app``."""
    app.router.add_post("/admin/price", set_price)
    app.router.add_get("/admin/prices", get_prices)
    app.router.add_get("/admin/orders", list_orders)
    app.router.add_get("/admin/algo-orders", list_algo_orders)
    app.router.add_get("/admin/trades", list_trades)
    app.router.add_get("/admin/requests", list_requests)
    app.router.add_post("/admin/faults", arm_fault)
    app.router.add_get("/admin/faults", list_faults)
    app.router.add_delete("/admin/faults", clear_faults)
    app.router.add_post("/admin/reset", reset)
    app.router.add_get("/admin/state", describe)
