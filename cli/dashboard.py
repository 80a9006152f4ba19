"""`order-execution dashboard`: Dramatiq's dashboard over the service's symbol queues.

Serves the `dramatiq_dashboard` WSGI app with waitress at
`http://<dashboard.host>:<dashboard.port><dashboard.path>/` (127.0.0.1:9181/dashboard/ by
default: it can delete and requeue messages, so it listens on loopback unless told
otherwise). Every (account, symbol) of the settings has its queue declared, so each
`orders.<SYMBOL>` (the account `default`) and `orders.<account>.<SYMBOL>` (any other) shows
with its ready, delayed (`.DQ`) and dead-lettered (`.XQ`) messages, even while empty.

The package's metadata pins dramatiq<2 and redis<5; it is installed without its
dependencies (`make setup`, the Dockerfile) and runs on the versions we ship. One thing it
cannot know: our workers sleep on a per-queue doorbell, so a message it requeues also rings
its queue's doorbell here, waking an idle worker at once instead of at its next sweep.

Beside the dashboard: `/` redirects to it, `/health` answers 200 while Redis does (503
otherwise), anything else is 404.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from order_execution.orders.store_scripts import RING
from order_execution.runtime.redis_connection import open_sync_redis
from order_execution.runtime.settings import Settings
from order_execution.tasks.broker import build_broker
from order_execution.tasks.queues import doorbell_key, queues_for

log = logging.getLogger(__name__)

_THREADS = 4  # a few operators at once; each request is a handful of Redis calls


class _RingDoorbell(dramatiq.Middleware):
    """Ring the doorbell of the queue a message was enqueued on (requeue from the dashboard)."""

    def after_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int) -> None:
        if not isinstance(broker, RedisBroker):
            return
        # The .DQ queue's own bell for a delayed message; rung as the store rings it.
        broker.client.eval(RING, 1, doorbell_key(message.queue_name))


def dashboard_broker(settings: Settings, *, client: redis.Redis | None = None) -> RedisBroker:
    """A RedisBroker on the service's queues with every (account, symbol) queue declared.

    `client` replaces the one built from `settings.redis` (tests).
    """
    if client is None:
        client = open_sync_redis(settings.redis)  # through Sentinel if redis.sentinels is set
    broker = build_broker(settings.redis.url, client=client)
    broker.add_middleware(_RingDoorbell())
    for queue in queues_for(settings.account_names, settings.symbols):
        broker.declare_queue(queue)
    return broker


def build_app(settings: Settings, *, client: redis.Redis | None = None) -> WSGIApplication:
    """The WSGI app: the dashboard under `settings.dashboard.path`, `/health`, and a redirect at `/`."""
    from dramatiq_dashboard import DashboardApp

    broker = dashboard_broker(settings, client=client)
    prefix = settings.dashboard.path
    dashboard: WSGIApplication = DashboardApp(broker, prefix)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "") or "/"
        if path.startswith(prefix + "/"):
            inner = {**environ, "PATH_INFO": path[len(prefix) :], "SCRIPT_NAME": prefix}
            return dashboard(inner, start_response)
        if path in ("/", prefix):
            start_response("302 Found", [("Location", prefix + "/"), ("Content-Length", "0")])
            return [b""]
        if path == "/health":
            try:
                broker.client.ping()
            except redis.RedisError as exc:
                return _text(start_response, "503 Service Unavailable", f"redis: {type(exc).__name__}\n")
            return _text(start_response, "200 OK", "ok\n")
        return _text(start_response, "404 Not Found", "not found\n")

    return app


def _text(start_response: StartResponse, status: str, body: str) -> list[bytes]:
    data = body.encode()
    start_response(
        status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))]
    )
    return [data]


def dashboard_url(settings: Settings, *, port: int | None = None) -> str:
    """Where a person on this machine opens the dashboard (on `port` instead of the configured one)."""
    host = settings.dashboard.host
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    return f"http://{shown}:{port or settings.dashboard.port}{settings.dashboard.path}/"


def serve(settings: Settings) -> None:
    """Serve the dashboard until the process is stopped (waitress, `_THREADS` threads).

    Raises OSError when the address is taken.
    """
    from waitress import create_server

    server = create_server(
        build_app(settings),
        host=settings.dashboard.host,
        port=settings.dashboard.port,
        threads=_THREADS,
        ident="order-execution-dashboard",
    )
    log.info(
        "Dramatiq dashboard on %s (queues: %s)",
        dashboard_url(settings),
        ", ".join(queues_for(settings.account_names, settings.symbols)),
    )
    server.run()
