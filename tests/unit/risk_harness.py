"""A gateway replica with pre-trade risk and AdminService on a real gRPC socket, on any Redis.

Several replicas on the same Redis client behave as gateways behind a load balancer:
they share orders, limits, the kill switch and the risk counts, nothing else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import grpc

from order_execution.gateway.admin_servicer import AdminServicer
from order_execution.gateway.auth import Authenticator
from order_execution.gateway.handlers import Intake
from order_execution.gateway.risk import RiskGate
from order_execution.gateway.rules_cache import RulesCache
from order_execution.gateway.servicer import OrderServicer
from order_execution.gateway.updates import UpdateHub
from order_execution.launcher.processes import free_port
from order_execution.orders.model import now_ms
from order_execution.orders.risk_state import RiskState
from order_execution.orders.rules_store import RulesStore
from order_execution.orders.store import OrderStore
from order_execution.proto import admin_pb2_grpc, order_pb2_grpc
from order_execution.runtime.settings import AuthSettings, RiskSettings
from tests.factories import BTC_RULES
from tests.unit.gateway_harness import ETH_RULES

# BTCUSDT as the exchange lists it, PERCENT_PRICE included (multiplierUp 1.05, multiplierDown 0.95).
BTC_RULES_PP = dataclasses.replace(
    BTC_RULES, percent_price_up=Decimal("1.0500"), percent_price_down=Decimal("0.9500")
)


@dataclass
class Replica:
    """One running gateway replica: stubs to its two services and its intake and gate."""

    orders: order_pb2_grpc.OrderServiceAsyncStub
    admin: admin_pb2_grpc.AdminServiceAsyncStub
    intake: Intake
    gate: RiskGate
    store: OrderStore
    target: str  # host:port of the gRPC server


async def set_marks(redis: Any, age_ms: int = 0, **prices: str) -> None:
    """Store mark prices as the listener does, read `age_ms` ago."""
    await RiskState(redis).save_marks({s: Decimal(p) for s, p in prices.items()}, time_ms=now_ms() - age_ms)


@asynccontextmanager
async def risk_replica(
    redis: Any,
    limits: RiskSettings | None = None,
    *,
    auth: AuthSettings | None = None,
    accounts: Sequence[str] = (),
) -> AsyncIterator[Replica]:
    """Serve OrderService and AdminService with a RiskGate whose defaults are `limits`, for
    `accounts` (default: the account `default` alone).

    BTCUSDT (with PERCENT_PRICE) and ETHUSDT rules are loaded; `auth` None: authentication off.
    """
    rules_store = RulesStore(redis)
    await rules_store.save([BTC_RULES_PP, ETH_RULES])
    rules = RulesCache(rules_store)
    await rules.load()
    store = OrderStore(redis)
    hub = UpdateHub(store.outbox)
    await hub.start(wait_s=0.2)
    defaults = limits or RiskSettings(allowed_symbols=["BTCUSDT", "ETHUSDT"])
    gate = RiskGate(RiskState(redis), defaults, accounts=accounts)
    await gate.load()
    intake = Intake(store, rules, defaults, risk_gate=gate)
    authenticator = Authenticator(auth) if auth is not None else None
    server = grpc.aio.server()
    order_pb2_grpc.add_OrderServiceServicer_to_server(OrderServicer(intake, hub, authenticator), server)
    clients = auth.clients if auth is not None else []
    admin_pb2_grpc.add_AdminServiceServicer_to_server(
        AdminServicer(gate, intake, authenticator, clients=clients), server
    )
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Replica(
                order_pb2_grpc.OrderServiceStub(channel),
                admin_pb2_grpc.AdminServiceStub(channel),
                intake,
                gate,
                store,
                f"127.0.0.1:{port}",
            )
    finally:
        await server.stop(0)
        await hub.stop()
