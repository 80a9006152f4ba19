"""The gateway's HTTP side (port 9091): health probes and Prometheus metrics.

/health        JSON `{"status", "timestamp" (RFC 3339), "version", "checks": {name: {"name",
               "status", "duration_ms", "message"?}}}` (see gateway/health.py; `rate_limits`
               also has `accounts` and `exchange` `venues`, gateway/health_accounts.py): "healthy";
               "degraded" (200) when only NATS, the exchange, the user stream, the workers or
               the rate limits fail; "unhealthy" (503) when Redis or the trading rules do
/health/live   200 "alive" while the process serves
/health/ready  200 "ready" when Redis answers and trading rules are loaded (and, in the first
               15 s after start, mark prices; with a note when no worker consumes the
               queues), else 503 "not ready: <why>"
/metrics       Prometheus text: this process's series and the cluster gauges (gateway/cluster_gauges.py)
Any other path answers 404.

This server shares the event loop that serves gRPC (one process, one loop: no thread to
hand the registry to, and a scrape is short), so a scrape is kept cheap and bounded
whatever the scrape rate: it sends nothing to Redis (the cluster gauges are refreshed by
one task every `monitoring.cluster_gauges_refresh_ms`) and runs no health check, and the
page is rendered in a thread and reused for `monitoring.metrics_render_ms`, so N scrapes
per second cost at most one render per period, and none of it stalls the loop whole.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from importlib import metadata

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from order_execution.exchange.account import breaker_namespaces
from order_execution.gateway.cluster_gauges import ClusterGauges, GaugeRefresher
from order_execution.gateway.health import READINESS, HealthChecks
from order_execution.orders import metrics as shared_metrics

__all__ = ["GAUGE_REFRESHER", "HealthChecks", "build_http_app", "service_version"]


GAUGE_REFRESHER = web.AppKey("gauge_refresher", GaugeRefresher)  # the app's cluster-gauge task


def service_version() -> str:
    """The installed package's version ("unknown" when run from a tree that is not installed)."""
    try:
        return metadata.version("order-execution")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_http_app(checks: HealthChecks, gauges: ClusterGauges | None = None) -> web.Application:
    """The aiohttp application serving the routes in the module docstring.

    `gauges` defaults to the cluster gauges of `checks`' settings (accounts, symbols, venues),
    store, listener status and budgets; the app refreshes them from its start to its cleanup
    (one task, see GaugeRefresher). Also bounds this process's symbol and account labels to
    the settings' symbols and accounts.
    """
    settings = checks.settings
    shared_metrics.set_symbols(settings.symbols)
    shared_metrics.set_accounts(settings.account_names)
    if gauges is None:
        gauges = ClusterGauges(
            checks.store,
            checks.listener,
            settings.symbols,
            accounts=settings.account_names,
            budgets=checks.budgets,
            breaker_namespaces=breaker_namespaces(settings),
        )
    version = service_version()
    refresher = GaugeRefresher(
        gauges,
        period_s=settings.monitoring.cluster_gauges_refresh_ms / 1000,
        timeout_s=settings.monitoring.probe_timeout_ms / 1000,
    )
    page = _RenderedPage(settings.monitoring.metrics_render_ms / 1000)

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
        return web.Response(body=await page.body(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(_: web.Application) -> None:
        refresher.start()

    async def close(_: web.Application) -> None:
        await refresher.stop()
        await checks.close()

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/metrics", metrics)
    app.on_startup.append(start)
    app.on_cleanup.append(close)
    app[GAUGE_REFRESHER] = refresher
    return app


class _RenderedPage:
    """The registry's exposition, rendered again only once it is `max_age_s` old (0: every time).

    Rendering runs in a thread, so the gRPC loop keeps serving between the interpreter's
    switches instead of stalling for a whole render (~20 ms with the exchange's series);
    scrapes that arrive during a render share it.
    """

    def __init__(self, max_age_s: float) -> None:
        self._max_age_s = max_age_s
        self._at = float("-inf")
        self._body = b""
        self._rendering: asyncio.Future[bytes] | None = None

    async def body(self) -> bytes:
        if self._body and time.monotonic() - self._at < self._max_age_s:
            return self._body
        if self._rendering is None:
            self._rendering = asyncio.ensure_future(self._render())
        rendering = self._rendering
        return await asyncio.shield(rendering)

    async def _render(self) -> bytes:
        try:
            started = time.monotonic()
            self._body = await asyncio.to_thread(generate_latest)
            self._at = started  # fresh as of when rendering began
            return self._body
        finally:
            self._rendering = None
