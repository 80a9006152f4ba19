"""The gateway's HTTP side (port 9091): health probes and Prometheus metrics.

/health        JSON `{"status", "timestamp" (RFC 3339), "version", "checks": {name: {"name",
               "status", "duration_ms", "message"?}}}` (see gateway/health.py): "healthy";
               "degraded" (200) when only NATS, the exchange, the user stream, the workers or
               the rate limits fail; "unhealthy" (503) when Redis or the trading rules do
/health/live   200 "alive" while the process serves
/health/ready  200 "ready" when Redis answers and trading rules are loaded (and, in the first
               15 s after start, mark prices; with a note when no worker consumes the
               queues), else 503 "not ready: <why>"
/metrics       Prometheus text: this process's series, then the cluster gauges read from Redis
Any other path answers 404.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from importlib import metadata

import redis.exceptions
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from exchange.account import account_id
from gateway.cluster_gauges import ClusterGauges
from gateway.health import READINESS, HealthChecks
from orders import metrics as shared_metrics

__all__ = ["HealthChecks", "build_http_app", "service_version"]

log = logging.getLogger(__name__)


def service_version() -> str:
    """The installed package's version ("unknown" when run from a tree that is not installed)."""
    try:
        return metadata.version("order-execution")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_http_app(checks: HealthChecks, gauges: ClusterGauges | None = None) -> web.Application:
    """The aiohttp application serving the routes in the module docstring.

    `gauges` defaults to the cluster gauges of `checks`' settings, store, listener status
    and budget. Also bounds this process's symbol labels to the settings' symbols.
    """
    settings = checks.settings
    shared_metrics.set_symbols(settings.symbols)
    if gauges is None:
        gauges = ClusterGauges(
            checks.store,
            checks.listener,
            settings.symbols,
            checks.budget,
            breaker_namespace=f"{settings.redis.namespace}:{account_id(settings)}",
        )
    version = service_version()
    gauge_timeout_s = settings.monitoring.probe_timeout_ms / 1000

    async def health(_: web.Request) -> web.Response:
        results = await checks.all()
        ready = all(results[name]["status"] == "healthy" for name in READINESS)
        healthy = all(r["status"] == "healthy" for r in results.values())
        body = {
            "status": "healthy" if healthy else "degraded" if ready else "unhealthy",
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "version": version,
            "checks": results,
        }
        return web.json_response(body, status=200 if ready else 503)

    async def live(_: web.Request) -> web.Response:
        return web.Response(text="alive")

    async def ready(_: web.Request) -> web.Response:
        results = await checks.readiness()
        failing = {name: r.get("message", "") for name, r in results.items() if r["status"] != "healthy"}
        if failing:
            reasons = "; ".join(f"{name}: {why}" for name, why in failing.items())
            return web.Response(status=503, text=f"not ready: {reasons}")
        try:
            await checks.workers()
        except Exception as exc:  # ready to take orders, but say they will wait
            return web.Response(text=f"ready (degraded: {exc})")
        return web.Response(text="ready")

    async def metrics(_: web.Request) -> web.Response:
        try:
            await asyncio.wait_for(gauges.refresh(), gauge_timeout_s)
        except (redis.exceptions.RedisError, TimeoutError) as exc:
            log.warning("metrics: cluster gauges not refreshed (%r); serving the last values", exc)
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def close(_: web.Application) -> None:
        await checks.close()

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/metrics", metrics)
    app.on_cleanup.append(close)
    return app
