"""The REST request pipeline every Binance endpoint goes through.

For each call: journal it, apply latency, read parameters (query wins over body), charge IP weight (429/
418), fire pre-execution faults, authenticate (API key, then signature and timestamp for SIGNED), charge
the account's order counters (-1015), run the handler, fire post-execution faults, and write JSON with the
``X-MBX-USED-WEIGHT-1M`` and (for order endpoints) ``X-MBX-ORDER-COUNT-10S/1M`` headers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from aiohttp import web

from usdm_simulator import errors
from usdm_simulator.auth import Credentials, identify, merge_params, verify_signed
from usdm_simulator.config import FaultConfig
from usdm_simulator.errors import BinanceError
from usdm_simulator.faults import POST_KINDS, PRE_KINDS
from usdm_simulator.journal import RequestRecord
from usdm_simulator.models import Account
from usdm_simulator.state import SimulatorState

Security = Literal["NONE", "USER_STREAM", "SIGNED"]
_REST_KINDS = frozenset({"latency", "timeout_1007"} | PRE_KINDS | POST_KINDS)


@dataclass(frozen=True)
class Call:
    """What a handler gets: the state, the merged parameters and the authenticated account (if any)."""

    state: SimulatorState
    params: Mapping[str, str]
    account: Account | None

    @property
    def acct(self) -> Account:
        """The authenticated account (handlers of USER_STREAM/SIGNED endpoints only)."""
        assert self.account is not None, "endpoint is not authenticated"
        return self.account


Handler = Callable[[Call], Any]


@dataclass(frozen=True)
class Endpoint:
    """A Binance REST endpoint: route, security type, IP weight and order-count weights (10 s, 1 min)."""

    method: str
    path: str
    security: Security
    handler: Handler
    weight: int | Callable[[Mapping[str, str]], int] = 1
    orders: tuple[int, int] = (0, 0)

    @property
    def key(self) -> str:
        """``"METHOD /path"``, the name faults and the journal use."""
        return f"{self.method} {self.path}"


def _json(body: Any, status: int, headers: dict[str, str]) -> web.Response:
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        headers=headers,
        content_type="application/json",
    )


def _fault_response(spec: FaultConfig, headers: dict[str, str]) -> web.Response:
    kind = spec.kind
    if kind == "http_502":
        return web.Response(
            text="<html><body><h1>502 Bad Gateway</h1></body></html>",
            status=spec.http_status or 502,
            content_type="text/html",
            headers=headers,
        )
    if kind == "waf_403":
        return web.Response(
            text="<html><body><h1>403 Forbidden</h1>Request blocked.</body></html>",
            status=spec.http_status or 403,
            content_type="text/html",
            headers=headers,
        )
    if kind == "http_500":
        return _json(errors.error(errors.UNKNOWN).body(), spec.http_status or 500, headers)
    if kind == "http_503_unavailable":
        return _json({"code": -1001, "msg": "Service Unavailable."}, spec.http_status or 503, headers)
    if kind == "throttled_1008":
        return _json(errors.error(errors.THROTTLED).body(), spec.http_status or 503, headers)
    if kind == "timeout_1007":
        return _json(errors.error(errors.TIMEOUT).body(), spec.http_status or 408, headers)
    return _json(
        {"code": errors.UNKNOWN, "msg": errors.UNKNOWN_ERROR_503_MSG}, spec.http_status or 503, headers
    )


def _is_executed_fault(spec: FaultConfig) -> bool:
    return spec.kind in POST_KINDS or (spec.kind == "timeout_1007" and spec.executed)


def _exempt(spec: FaultConfig, params: Mapping[str, str]) -> bool:
    """-1008 throttling spares orders that reduce exposure (reduceOnly / closePosition), as on Binance."""
    if spec.kind != "throttled_1008":
        return False
    return "true" in (params.get("reduceOnly", "").lower(), params.get("closePosition", "").lower())


def _is_pre_fault(spec: FaultConfig) -> bool:
    return spec.kind in PRE_KINDS or (spec.kind == "timeout_1007" and not spec.executed)


async def dispatch(request: web.Request, endpoint: Endpoint, state: SimulatorState) -> web.StreamResponse:
    """Serve one Binance REST call through the pipeline described in the module docstring."""
    ip = request.remote or "unknown"
    record = state.journal.open(state.clock.now_ms(), endpoint.method, endpoint.path, ip)
    headers: dict[str, str] = {}
    fired = state.faults.draw(endpoint.key, _REST_KINDS)
    latency_ms = sum(f.latency_ms for f in fired if f.kind == "latency")
    if latency_ms:
        await asyncio.sleep(latency_ms / 1000)
    raw_query = request.rel_url.raw_query_string
    raw_body = await request.text() if request.body_exists else ""
    params = merge_params(raw_query, raw_body)
    record.params = {k: v for k, v in params.items() if k != "signature"}
    # Known before any check, so a request refused for its IP (429/418) still counts for its account.
    record.account = _claimed_account(request, state)
    try:
        weight = endpoint.weight if isinstance(endpoint.weight, int) else endpoint.weight(params)
        try:
            state.limiter.charge_ip(ip, weight)
        finally:
            headers["X-MBX-USED-WEIGHT-1M"] = str(state.limiter.used_weight(ip))
        pre = next((f for f in fired if _is_pre_fault(f) and not _exempt(f, params)), None)
        if pre is not None:
            return _finish(record, _fault_response(pre, headers), pre)
        account = _authenticate(request, endpoint, state, params, raw_query, raw_body, record)
        if account is not None and endpoint.orders != (0, 0):
            try:
                state.limiter.charge_orders(ip, account.key, *endpoint.orders)
            finally:
                c10, c60 = state.limiter.order_counts(account.key)
                headers["X-MBX-ORDER-COUNT-10S"], headers["X-MBX-ORDER-COUNT-1M"] = str(c10), str(c60)
        result = endpoint.handler(Call(state, params, account))
    except BinanceError as exc:
        if exc.retry_after_s is not None:
            headers["Retry-After"] = str(exc.retry_after_s)
        record.error_code = exc.code
        return _finish(record, _json(exc.body(), exc.http_status, headers), None)
    post = next((f for f in fired if _is_executed_fault(f)), None)
    if post is not None:
        if post.kind == "drop_after_accept":
            record.status, record.fault = 0, post.kind
            transport = request.transport
            if transport is not None:
                transport.abort()
            # Never delivered: aiohttp's write to the aborted transport fails quietly.
            return web.Response(status=200)
        return _finish(record, _fault_response(post, headers), post)
    return _finish(record, _json(result, 200, headers), None)


def _finish(record: RequestRecord, response: web.Response, fault: FaultConfig | None) -> web.Response:
    record.status = response.status
    if fault is not None:
        record.fault = fault.kind
        if response.content_type == "application/json" and isinstance(response.body, bytes):
            record.error_code = orjson.loads(response.body).get("code")
    return response


def _claimed_account(request: web.Request, state: SimulatorState) -> str | None:
    """The key of the known account whose API key the request carries (not yet authenticated), else None."""
    key = request.headers.get("X-MBX-APIKEY")
    return key if key is not None and key in state.credentials else None


def _authenticate(
    request: web.Request,
    endpoint: Endpoint,
    state: SimulatorState,
    params: Mapping[str, str],
    raw_query: str,
    raw_body: str,
    record: RequestRecord,
) -> Account | None:
    if endpoint.security == "NONE":
        return None
    creds = identify(request.headers.get("X-MBX-APIKEY"), state.credentials)
    record.account = creds.key
    if endpoint.security == "SIGNED":
        _verify_signed(state, creds, params, raw_query, raw_body)
    return state.engine.accounts[creds.key]


def _verify_signed(
    state: SimulatorState, creds: Credentials, params: Mapping[str, str], raw_query: str, raw_body: str
) -> None:
    """Check a SIGNED request against the exchange time; while simulated time runs ahead of the wall
    clock (``time_scale`` > 1 or ``POST /admin/clock``), a timestamp valid against wall time passes too, so
    clients that sign with their local clock keep working."""
    limit = state.config.max_recv_window_ms
    now = state.clock.now_ms()
    try:
        verify_signed(creds, params, raw_query, raw_body, now, limit)
    except BinanceError as exc:
        wall = state.clock.wall_ms()
        if exc.code != errors.INVALID_TIMESTAMP or wall == now:
            raise
        verify_signed(creds, params, raw_query, raw_body, wall, limit)
