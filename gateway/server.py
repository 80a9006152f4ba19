"""Gateway process wiring: connect, serve gRPC on 50051 and HTTP on 9091, stop cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
import redis.asyncio as aioredis
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway.desk import OrderDesk
from gateway.http import HealthChecks, build_http_app
from gateway.rules_cache import RulesCache
from gateway.servicer import OrderServicer
from gateway.updates import UpdateHub
from orders.events import EventBus
from orders.rules_store import RulesStore
from orders.settings import Settings
from orders.store import OrderStore
from proto import order_pb2, order_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = order_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name


async def serve(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run the gateway until `stop` is set or SIGINT/SIGTERM arrives."""
    stop = stop or _stop_on_signals()
    redis_client = aioredis.Redis.from_url(settings.redis.url)
    bus = await EventBus.connect(
        settings.nats.address, stream=settings.nats.stream, ping_interval_s=settings.nats.ping_interval_s
    )
    store = OrderStore(
        redis_client, namespace=settings.redis.namespace, ttl_s=settings.performance.order_cache_ttl
    )
    rules = RulesCache(RulesStore(redis_client, namespace=settings.redis.namespace))
    await rules.load()
    rules.start()
    hub = UpdateHub()
    subscription = await bus.subscribe_updates(hub.publish)
    desk = OrderDesk(store=store, bus=bus, rules=rules, risk=settings.risk)

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

    runner = web.AppRunner(build_http_app(HealthChecks(store, bus, rules)), access_log=None)
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
    await desk.drain()
    await subscription.unsubscribe()
    await rules.stop()
    await runner.cleanup()
    await bus.close()
    await redis_client.aclose()


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop
