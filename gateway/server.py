"""Gateway process wiring: connect, serve gRPC on 50051 and HTTP on 9091, stop cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from exchange.account import account_id, rate_budget
from gateway.admission import Admission
from gateway.desk import OrderDesk
from gateway.http import HealthChecks, build_http_app
from gateway.rules_cache import RulesCache
from gateway.servicer import OrderServicer
from gateway.updates import UpdateHub
from orders.listener_status import ListenerStatus
from orders.outbox import Outbox
from orders.redis_connection import open_redis
from orders.rules_store import RulesStore
from orders.settings import Settings
from orders.store import OrderStore
from proto import order_pb2, order_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = order_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name


async def serve(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run the gateway until `stop` is set or SIGINT/SIGTERM arrives."""
    stop = stop or _stop_on_signals()
    redis_client = open_redis(settings.redis)
    store = OrderStore.from_settings(redis_client, settings)
    rules = RulesCache(RulesStore(redis_client, namespace=settings.redis.namespace))
    rules.start()  # loads at once, and keeps retrying while Redis is away
    # The outbox tail blocks on its own connection, so it never queues behind order writes.
    tail_client = open_redis(settings.redis, blocking_reads_ms=1000)
    hub = UpdateHub(
        Outbox(
            tail_client,
            namespace=settings.redis.namespace,
            retention_s=settings.performance.update_retention_s,
        )
    )
    await hub.start()
    budget = rate_budget(redis_client, settings)
    admission = Admission(
        store=store,
        settings=settings.admission,
        max_order_age_ms=settings.worker.max_order_age_ms,
        budget=budget,
        breaker_namespace=f"{settings.redis.namespace}:{account_id(settings)}",
        breaker_settings=settings.circuit_breaker,
    )
    desk = OrderDesk(store=store, rules=rules, risk=settings.risk, admission=admission)

    server = grpc.aio.server()
    order_pb2_grpc.add_OrderServiceServicer_to_server(OrderServicer(desk, hub), server)
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    grpc_address = f"{settings.server.host}:{settings.server.grpc_port}"
    server.add_insecure_port(grpc_address)
    await server.start()
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)

    listener = ListenerStatus(redis_client, namespace=settings.redis.namespace)
    runner = web.AppRunner(build_http_app(HealthChecks(store, rules, listener, budget)), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.server.host, settings.server.http_port)
    await site.start()
    log.info(
        "gateway serving gRPC on %s and HTTP on %s:%d",
        grpc_address,
        settings.server.host,
        settings.server.http_port,
    )

    await stop.wait()
    log.info("gateway stopping")
    await health_servicer.enter_graceful_shutdown()
    # Streams are cancelled after the grace period, so shutdown never hangs on a client.
    await server.stop(settings.server.shutdown_grace_ms / 1000)
    await hub.stop()
    await rules.stop()
    await runner.cleanup()
    await tail_client.aclose()
    await redis_client.aclose()


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop
