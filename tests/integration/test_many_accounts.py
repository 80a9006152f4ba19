"""Two exchange accounts on one stack, started as `up --accounts 2` starts it (the simulator with
both, the service told of them by key files): an order on each account reaches the simulator once,
signed with that account's key, and its state comes back on the order.

The account `default` is reached through gRPC (CreateOrder naming no account). The gateway of this
branch does not read `CreateOrderRequest.account` yet, so the order on `acct-2` is placed as the
gateway places one: stored and queued in one step (`OrderStore.create` with `submit_order_push`),
with `account="acct-2"`; from there on it is the service's own path (its queue, the worker's
executor for that account, the exchange).

The stack has a Redis of its own on a free port (the machine's Redis has no database left to
dedicate to a module, see tests/redis_dbs.py), and the machine's NATS, as every stack does.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from functools import partial
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis

from order_execution.launcher.launch import Launcher
from order_execution.launcher.processes import free_port
from order_execution.launcher.stack import LocalStack, local_stack
from order_execution.orders.model import Order, OrderType, Side, TimeInForce
from order_execution.orders.store import OrderStore
from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc
from order_execution.tasks.messages import submit_order_push

pytestmark = pytest.mark.integration

FROZEN = ("--walk-interval-ms", "0", "--price", "BTCUSDT=50000", "--price", "ETHUSDT=3000")
OWN_REDIS_DB = 0  # the Redis started here holds nothing else


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of this module's own on a free 127.0.0.1 port, stopped by pid afterwards."""
    server = shutil.which("redis-server")
    assert server, "redis-server is not on the PATH"
    directory = tmp_path_factory.mktemp("redis")
    launcher = Launcher(directory, die_with_parent=True)
    port = free_port()
    launcher.redis(server, port, directory)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        launcher.stop()


@pytest.fixture(scope="module")
def stack(own_redis: str, real_nats: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with local_stack(
        own_redis,
        real_nats,
        redis_db=OWN_REDIS_DB,
        log_dir=tmp_path_factory.mktemp("logs"),
        simulator_args=FROZEN,
        accounts=2,
    ) as started:
        yield started


async def eventually(check: Callable[[], Any], what: str, timeout_s: float = 15.0) -> Any:
    """`check()`'s first truthy result (it may be a coroutine function), polled until `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def at_exchange(stack: LocalStack, client_order_id: str) -> list[dict[str, Any]]:
    """The simulator's orders with this client order id."""
    rows = stack.admin(f"/admin/orders?clientOrderId={client_order_id}")
    assert isinstance(rows, list)
    return rows


def at_exchange_of(stack: LocalStack, key: str) -> list[dict[str, Any]]:
    """The simulator's orders of the account with API key `key`."""
    rows = stack.admin(f"/admin/orders?account={key}")
    assert isinstance(rows, list)
    return rows


def posts(stack: LocalStack, client_order_id: str) -> list[dict[str, Any]]:
    """The order POSTs the simulator received for this client order id."""
    rows = stack.admin(f"/admin/requests?method=POST&path=/fapi/v1/order&clientOrderId={client_order_id}")
    assert isinstance(rows, list)
    return rows


async def test_an_order_on_each_account_reaches_the_exchange_under_its_own_key(
    stack: LocalStack, own_redis: str
) -> None:
    default, second = stack.accounts
    assert (default.name, second.name) == ("default", "acct-2") and default.key != second.key
    assert (stack.api_key, stack.secret_key) == default.credentials

    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        stub = order_pb2_grpc.OrderServiceStub(channel)
        on_default = await stub.CreateOrder(
            pb.CreateOrderRequest(
                symbol="BTCUSDT",
                side=pb.BUY,
                type=pb.LIMIT,
                quantity="0.003",
                price="49000.0",
                time_in_force=pb.GTC,
                client_order_id=f"it-default-{uuid.uuid4().hex[:8]}",
            )
        )
        assert on_default.order.account == "default"

        client = aioredis.Redis.from_url(f"redis://{own_redis}/{OWN_REDIS_DB}")
        try:
            store = OrderStore(client)
            wanted = Order(
                order_id=str(uuid.uuid4()),
                client_order_id=f"it-acct2-{uuid.uuid4().hex[:8]}",
                symbol="BTCUSDT",
                side=Side.BUY,
                type=OrderType.LIMIT,
                quantity=Decimal("0.003"),
                price=Decimal("48000.0"),
                time_in_force=TimeInForce.GTC,
                account="acct-2",
            )
            created = await store.create(wanted, enqueue=submit_order_push)
            assert created.created
        finally:
            await client.aclose()

        for order_id, client_order_id, account in (
            (on_default.order_id, on_default.client_order_id, default),
            (wanted.order_id, wanted.client_order_id, second),
        ):
            [placed] = await eventually(
                partial(at_exchange, stack, client_order_id), f"{client_order_id} at the exchange"
            )
            assert placed["account"] == account.key and placed["status"] == "NEW"
            [post] = posts(stack, client_order_id)  # sent once, signed with its own account's key
            assert (post["account"], post["status"]) == (account.key, 200)

            async def acknowledged(oid: str = order_id) -> pb.Order | None:
                reply = await stub.GetOrder(pb.GetOrderRequest(order_id=oid))
                return reply.order if reply.order.state == pb.SUBMITTED else None

            order = await eventually(acknowledged, f"{order_id} SUBMITTED")
            assert order.account == account.name
            assert order.exchange_order_id == str(placed["orderId"])

    # Each account's orders, and only those, under its key at the exchange.
    mine = {a.name: at_exchange_of(stack, a.key) for a in stack.accounts}
    assert {name: [row["clientOrderId"] for row in rows] for name, rows in mine.items()} == {
        "default": [on_default.client_order_id],
        "acct-2": [wanted.client_order_id],
    }
