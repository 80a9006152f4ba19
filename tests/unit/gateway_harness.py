"""The gateway's servicer on a real gRPC socket, for the unit tests that talk to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import fakeredis
import grpc

from order_execution.gateway.accounts import TradingAccounts
from order_execution.gateway.admission import Admission
from order_execution.gateway.auth import Authenticator
from order_execution.gateway.handlers import Intake
from order_execution.gateway.order_builder import build_order
from order_execution.gateway.proto_mapping import place_order_from_pb
from order_execution.gateway.rules_cache import RulesCache
from order_execution.gateway.servicer import OrderServicer
from order_execution.gateway.tls import add_port
from order_execution.gateway.updates import UpdateHub
from order_execution.gateway.validation import check_create_text
from order_execution.launcher.processes import free_port
from order_execution.orders.model import DEFAULT_ACCOUNT, Order
from order_execution.orders.replicas import NO_REPLICA_ACKS, ReplicaAcks
from order_execution.orders.rules import SymbolRules
from order_execution.orders.rules_store import RulesStore
from order_execution.orders.store import OrderStore
from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc
from order_execution.runtime.settings import AuthSettings, RiskSettings, TlsSettings
from tests.factories import BTC_RULES

ETH_RULES = SymbolRules.from_exchange_info(
    {
        "symbol": "ETHUSDT",
        "status": "TRADING",
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "39.86", "maxPrice": "306177", "tickSize": "0.01"},
            {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "10000", "stepSize": "0.001"},
            {"filterType": "MARKET_LOT_SIZE", "minQty": "0.001", "maxQty": "2000", "stepSize": "0.001"},
            {"filterType": "MIN_NOTIONAL", "notional": "20"},
        ],
    }
)


def limit_order(**changes: Any) -> pb.CreateOrderRequest:
    """A valid BTCUSDT LIMIT GTC buy of 0.002 at 50000.0, with `changes` applied."""
    fields: dict[str, Any] = {
        "symbol": "BTCUSDT",
        "side": pb.BUY,
        "type": pb.LIMIT,
        "quantity": "0.002",
        "price": "50000.0",
        "time_in_force": pb.GTC,
    }
    fields.update(changes)
    return pb.CreateOrderRequest(**fields)


def validated_order(req: pb.CreateOrderRequest, rules: dict[str, SymbolRules], risk: RiskSettings) -> Order:
    """The Order CreateOrder's intake makes of `req` before admission and the store: the request
    parsed, its text bounded (`check_create_text`), then validated and built (`build_order`).
    Raises InvalidOrder or RiskLimitExceeded naming the field, as the call would answer."""
    command = place_order_from_pb(req)
    check_create_text(command)
    return build_order(command, rules, risk)


@asynccontextmanager
async def serving_gateway(
    orders_redis: Any,
    rules_redis: fakeredis.FakeAsyncRedis,
    *,
    admission: Admission | None = None,
    auth: AuthSettings | None = None,
    tls: TlsSettings | None = None,
    namespace: str = "oe",
    replica_acks: ReplicaAcks = NO_REPLICA_ACKS,
    accounts: tuple[str, ...] = (DEFAULT_ACCOUNT,),
) -> AsyncIterator[str]:
    """Serve the gateway's servicer on 127.0.0.1 and yield its address.

    Orders go to `orders_redis`; BTCUSDT and ETHUSDT rules are loaded and both may be
    traded. `auth` None: authentication off (as `auth.enabled: false`); `tls` None: plaintext;
    `namespace` prefixes the order store's keys; `replica_acks` is `redis.min_replica_acks`
    and its timeout (the primary alone by default); `accounts` are the exchange accounts
    configured (settings `accounts`), the first the default.
    """
    rules_store = RulesStore(rules_redis)
    await rules_store.save([BTC_RULES, ETH_RULES])
    rules = RulesCache(rules_store)
    await rules.load()
    store = OrderStore(orders_redis, namespace=namespace, replica_acks=replica_acks)
    hub = UpdateHub(store.outbox, replicas=store.replica_probe("gateway-tail"))
    await hub.start(wait_s=0.2)
    intake = Intake(
        store,
        rules,
        RiskSettings(allowed_symbols=["BTCUSDT", "ETHUSDT"]),
        admission=admission,
        accounts=TradingAccounts(accounts),
    )
    server = grpc.aio.server()
    authenticator = Authenticator(auth) if auth is not None else None
    order_pb2_grpc.add_OrderServiceServicer_to_server(OrderServicer(intake, hub, authenticator), server)
    port = free_port()
    add_port(server, f"127.0.0.1:{port}", tls or TlsSettings())
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)
        await hub.stop()


@asynccontextmanager
async def running_gateway(
    orders_redis: Any,
    rules_redis: fakeredis.FakeAsyncRedis,
    *,
    admission: Admission | None = None,
    replica_acks: ReplicaAcks = NO_REPLICA_ACKS,
) -> AsyncIterator[order_pb2_grpc.OrderServiceAsyncStub]:
    """The gateway's servicer on a real gRPC socket, without auth, and a plaintext stub to it."""
    async with (
        serving_gateway(orders_redis, rules_redis, admission=admission, replica_acks=replica_acks) as target,
        grpc.aio.insecure_channel(target) as channel,
    ):
        yield order_pb2_grpc.OrderServiceStub(channel)
