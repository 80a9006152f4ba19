"""A worker's or listener's own `/metrics` endpoint (the gateway serves its own on 9091).

Each process serves its counters on its own port rather than through Prometheus'
multiprocess mode: one endpoint per process maps onto one pod per process in Kubernetes
(a plain pod scrape, no shared directory of mmap files to clean up after a crash), and a
process that dies takes its series with it instead of leaving them summed in.

`up` and the test stack give each process its port; several worker processes started by
one `order-execution worker --processes N` share the setting, so each takes the first
free port from it upward (at most `port_search` tries) and logs which one.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

Refresh = Callable[[], Awaitable[None]]


class MetricsEndpoint:
    """`GET /metrics` (Prometheus text) and `GET /health/live` on `host:port`; 404 elsewhere."""

    def __init__(self, host: str, port: int, *, port_search: int = 1, refresh: Refresh | None = None) -> None:
        self._host = host
        self._port = port
        self._port_search = max(port_search, 1)
        self._refresh = refresh
        self._runner: web.AppRunner | None = None
        self.port: int | None = None  # the port bound, once started

    async def start(self) -> int | None:
        """Bind the first free port from the configured one; returns it, or None (disabled: port 0,
        or every port in the range taken, which is logged and leaves the process running)."""
        if self._port == 0:
            return None
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health/live", _live)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        for port in range(self._port, self._port + self._port_search):
            try:
                await web.TCPSite(runner, self._host, port).start()
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue
            self._runner, self.port = runner, port
            log.info("metrics on http://%s:%d/metrics", self._host, port)
            return port
        await runner.cleanup()
        last = self._port + self._port_search - 1
        log.error("metrics: ports %d-%d are all in use; this process serves no /metrics", self._port, last)
        return None

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, _: web.Request) -> web.Response:
        if self._refresh is not None:
            await self._refresh()
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _live(_: web.Request) -> web.Response:
    return web.Response(text="alive")
