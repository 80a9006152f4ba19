"""The gateway's HTTP side (port 9091): health probes and Prometheus metrics.

/health        JSON: each dependency's status and check time in milliseconds; "degraded"
               (200) when only the listener is missing or its user stream is down, or when
               every replica holds off sending (429/418 block: `rate_limits`)
/health/live   200 "alive" while the process serves
/health/ready  200 "ready" when Redis answers and trading rules are loaded
/metrics       Prometheus text format (the shared rate budget's gauges are read at scrape time)
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis.exceptions
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from exchange.rate_budget import RateBudget
from gateway import metrics
from gateway.rules_cache import RulesCache
from orders.listener_status import ListenerStatus
from orders.model import now_ms
from orders.store import OrderStore


@dataclass
class HealthChecks:
    store: OrderStore
    rules: RulesCache
    listener: ListenerStatus
    budget: RateBudget | None = None

    async def run(self) -> dict[str, dict[str, object]]:
        """Checks that gate readiness."""
        return {"redis": await _timed(self._redis), "trading_rules": await _timed(self._rules)}

    async def run_all(self) -> dict[str, dict[str, object]]:
        """Readiness checks plus the listener (fills, reconciliation, NATS relay), which only degrades."""
        return {
            **await self.run(),
            "listener": await _timed(self._listener),
            "rate_limits": await _timed(self._rate_limits),
        }

    async def refresh_gauges(self) -> None:
        """Set the budget's gauges from Redis (at scrape time); a Redis error leaves them as they were."""
        if self.budget is None:
            return
        try:
            state = await self.budget.state()
        except redis.exceptions.RedisError:
            return
        metrics.EXCHANGE_BAN_SECONDS.set(max(0, state.blocked_until_ms - now_ms()) / 1000)
        for window, value in (
            ("weight_1m", state.weight_used),
            ("orders_10s", state.orders_10s),
            ("orders_1m", state.orders_1m),
            ("tokens", state.tokens),
        ):
            metrics.RATE_BUDGET_USED.labels(window).set(value)

    async def _rate_limits(self) -> str:
        if self.budget is None:
            return "off (rate_limit.enabled: false)"
        state = await self.budget.state()
        if state.blocked_until_ms:
            raise ConnectionRefusedError(f"every replica holds off sending: {state.blocked_reason}")
        limits = self.budget.limits
        return (
            f"weight {state.weight_used}/{limits.weight_per_minute} per minute, orders {state.orders_10s}/"
            f"{limits.orders_per_10s} per 10 s, {state.orders_1m}/{limits.orders_per_minute} per minute, "
            f"{state.tokens:.1f}/{self.budget.burst} request tokens"
        )

    async def _redis(self) -> str:
        await self.store.ping()
        return ""

    async def _listener(self) -> str:
        status = await self.listener.read()
        if not status:
            raise LookupError(
                "no listener leads: fills, reconciliation and NATS updates wait; "
                "start `order-execution listener`"
            )
        if status.get("user_stream") != "connected":
            raise ConnectionError(
                f"listener {status.get('leader')}: user-data stream {status.get('user_stream')}"
            )
        return f"leader {status.get('leader')}; NATS relay {status.get('nats')}"

    async def _rules(self) -> str:
        if not self.rules.current:
            await self.rules.reload_on_miss()
        if not self.rules.current:
            raise LookupError("no trading rules yet; a worker loads them from the exchange at start")
        return f"{len(self.rules.current)} symbols"


async def _timed(check: Callable[[], Awaitable[str]]) -> dict[str, object]:
    started = time.perf_counter()
    try:
        detail = await check()
        status = "healthy"
    except Exception as exc:
        detail, status = str(exc) or type(exc).__name__, "unhealthy"
    result: dict[str, object] = {
        "status": status,
        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
    }
    if detail:
        result["message"] = detail
    return result


def build_http_app(checks: HealthChecks) -> web.Application:
    async def health(_: web.Request) -> web.Response:
        results = await checks.run_all()
        degrading = ("listener", "rate_limits")  # these slow or pause trading but do not stop the gateway
        ready = all(r["status"] == "healthy" for name, r in results.items() if name not in degrading)
        healthy = ready and all(results[name]["status"] == "healthy" for name in degrading)
        body = {
            "status": "healthy" if healthy else "degraded" if ready else "unhealthy",
            "checks": results,
            "timestamp": int(time.time() * 1000),
        }
        return web.json_response(body, status=200 if ready else 503)

    async def live(_: web.Request) -> web.Response:
        return web.Response(text="alive")

    async def ready(_: web.Request) -> web.Response:
        results = await checks.run()
        failing = {name: r.get("message", "") for name, r in results.items() if r["status"] != "healthy"}
        if failing:
            reasons = "; ".join(f"{name}: {why}" for name, why in failing.items())
            return web.Response(status=503, text=f"not ready: {reasons}")
        return web.Response(text="ready")

    async def metrics(_: web.Request) -> web.Response:
        await checks.refresh_gauges()
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/metrics", metrics)
    return app
