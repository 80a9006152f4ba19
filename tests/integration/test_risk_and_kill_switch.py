"""Pre-trade risk and the kill switch on the whole stack against the simulator: mark prices and
positions from the listener, PERCENT_PRICE at the gateway, HALTED --cancel-open through the CLI."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from decimal import Decimal

import grpc
import pytest
import redis.asyncio as aioredis

from order_execution.cli.main import main
from order_execution.launcher.stack import LocalStack, local_stack
from order_execution.orders.risk_state import RiskState
from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc
from tests.redis_dbs import redis_db

pytestmark = pytest.mark.integration

RISK_REDIS_DB = redis_db(__name__)


@pytest.fixture(scope="module")
def stack(real_redis: str, real_nats: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with local_stack(
        real_redis,
        real_nats,
        redis_db=RISK_REDIS_DB,
        log_dir=tmp_path_factory.mktemp("logs"),
        simulator_args=("--walk-interval-ms", "0", "--price", "BTCUSDT=50000", "--price", "ETHUSDT=3000"),
    ) as running:
        yield running


async def wait_state(
    stub: order_pb2_grpc.OrderServiceAsyncStub, order_id: str, states: set[int], timeout_s: float = 10
) -> pb.Order:
    order = pb.Order()
    for _ in range(int(timeout_s / 0.05)):
        order = (await stub.GetOrder(pb.GetOrderRequest(order_id=order_id), timeout=5)).order
        if order.state in states:
            return order
        await asyncio.sleep(0.05)
    raise AssertionError(f"order {order_id} stayed {pb.OrderState.Name(order.state)}")


async def test_marks_positions_and_percent_price(stack: LocalStack, real_redis: str) -> None:
    client = aioredis.Redis.from_url(f"redis://{real_redis}/{RISK_REDIS_DB}")
    state = RiskState(client)
    for _ in range(100):  # the listener polls premiumIndex every second
        if "BTCUSDT" in await state.marks():
            break
        await asyncio.sleep(0.1)
    assert (await state.marks())["BTCUSDT"].price == Decimal(50000)
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        stub = order_pb2_grpc.OrderServiceStub(channel)
        bought = await stub.CreateOrder(
            pb.CreateOrderRequest(symbol="BTCUSDT", side=pb.BUY, type=pb.MARKET, quantity="0.003"), timeout=5
        )
        await wait_state(stub, bought.order_id, {pb.FILLED})
        for _ in range(100):  # ACCOUNT_UPDATE after the fill
            if (await state.positions()).get("BTCUSDT") == Decimal("0.003"):
                break
            await asyncio.sleep(0.05)
        assert (await state.positions())["BTCUSDT"] == Decimal("0.003")
        too_high = pb.CreateOrderRequest(
            symbol="BTCUSDT",
            side=pb.BUY,
            type=pb.LIMIT,
            quantity="0.002",
            price="52600",
            time_in_force=pb.GTC,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateOrder(too_high, timeout=5)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "exchange PERCENT_PRICE" in (caught.value.details() or "")
    await client.aclose()


async def test_halt_with_cancel_open_through_the_cli(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    resting = pb.CreateOrderRequest(
        symbol="BTCUSDT", side=pb.BUY, type=pb.LIMIT, quantity="0.003", price="48000", time_in_force=pb.GTC
    )
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        stub = order_pb2_grpc.OrderServiceStub(channel)
        ids = [(await stub.CreateOrder(resting, timeout=5)).order_id for _ in range(2)]
        for order_id in ids:
            await wait_state(stub, order_id, {pb.SUBMITTED})
        target = ["--target", stack.grpc_target]
        halt = ["risk", "halt", "--cancel-open", "--reason", "integration test", *target]
        assert await asyncio.to_thread(main, halt) == 0
        out = capsys.readouterr().out
        assert "trading: HALTED" in out and "2 open orders canceled or being canceled" in out
        for order_id in ids:  # the cancels went through the workers to the simulator
            await wait_state(stub, order_id, {pb.CANCELED})
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateOrder(resting, timeout=5)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        trading = stack.health()["checks"]["trading"]
        assert trading["status"] == "unhealthy" and "HALTED" in str(trading["message"])

        assert await asyncio.to_thread(main, ["risk", "show", "--json", *target]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["trading"]["mode"] == "HALTED" and shown["trading"]["reason"] == "integration test"
        actions = [entry["action"] for entry in shown["trading"]["audit"]]
        assert actions[:2] == ["cancel open orders", "mode HALTED"]

        assert await asyncio.to_thread(main, ["risk", "resume", "--reason", "done", *target]) == 0
        assert "trading: ACTIVE" in capsys.readouterr().out
        placed = await stub.CreateOrder(resting, timeout=5)
        assert placed.state == pb.NEW
        assert stack.health()["checks"]["trading"]["status"] == "healthy"
