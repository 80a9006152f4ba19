"""The gateway's servicer on a real gRPC socket, for the unit tests that talk to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import fakeredis
import grpc

from cli.processes import free_port
from gateway.admission import Admission
from gateway.desk import OrderDesk
from gateway.rules_cache import RulesCache
from gateway.servicer import OrderServicer
from gateway.updates import UpdateHub
from orders.rules_store import RulesStore
from orders.settings import RiskSettings
from orders.store import OrderStore
from proto import order_pb2_grpc
from tests.factories import BTC_RULES


@asynccontextmanager
async def running_gateway(
    orders_redis: Any, rules_redis: fakeredis.FakeAsyncRedis, *, admission: Admission | None = None
) -> AsyncIterator[order_pb2_grpc.OrderServiceAsyncStub]:
    """The gateway's servicer on a real gRPC socket, its orders in `orders_redis`, BTCUSDT rules loaded."""
    rules_store = RulesStore(rules_redis)
    await rules_store.save([BTC_RULES])
    rules = RulesCache(rules_store)
    await rules.load()
    store = OrderStore(orders_redis)
    hub = UpdateHub(store.outbox)
    await hub.start(wait_s=0.2)
    desk = OrderDesk(store, rules, RiskSettings(allowed_symbols=["BTCUSDT"]), admission=admission)
    server = grpc.aio.server()
    order_pb2_grpc.add_OrderServiceServicer_to_server(OrderServicer(desk, hub), server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield order_pb2_grpc.OrderServiceStub(channel)
    finally:
        await channel.close(None)
        await server.stop(0)
        await hub.stop()
