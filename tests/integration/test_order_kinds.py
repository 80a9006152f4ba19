"""Conditional orders, batch create, cancel-all and amend on real parts against the simulator.

Prices are frozen (no random walk) and moved with the simulator's admin API, so a stop
triggers exactly when a test says. The stack has its own Redis db (5).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator, Collection, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import grpc
import pytest

from order_execution.cli.client import run_order_command
from order_execution.cli.order_args import add_order_commands
from order_execution.launcher.stack import LocalStack, local_stack
from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc
from order_execution.runtime.settings import Settings
from tests.redis_dbs import redis_db

pytestmark = pytest.mark.integration

REDIS_DB = redis_db(__name__)
FINAL = {pb.FILLED, pb.CANCELED, pb.REJECTED, pb.EXPIRED}


@pytest.fixture(scope="module")
def stack(real_redis: str, real_nats: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    prices = ("--walk-interval-ms", "0", "--price", "BTCUSDT=50000", "--price", "ETHUSDT=3000")
    with local_stack(
        real_redis,
        real_nats,
        redis_db=REDIS_DB,
        log_dir=tmp_path_factory.mktemp("kinds-logs"),
        simulator_args=prices,
        extra_env={
            "ORDER_EXECUTION__RECONCILE__INTERVAL_S": "1",
            "ORDER_EXECUTION__RECONCILE__GRACE_MS": "500",
        },
    ) as running:
        yield running


@pytest.fixture
async def stub(stack: LocalStack) -> AsyncIterator[order_pb2_grpc.OrderServiceAsyncStub]:
    prices = stack.admin("/admin/prices")
    assert isinstance(prices, dict)
    if str(prices.get("BTCUSDT", {}).get("price")) != "50000":
        stack.admin("/admin/price", {"symbol": "BTCUSDT", "price": "50000"})
        await asyncio.sleep(2.0)  # the gateway's mark price (polled each second) catches up
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        yield order_pb2_grpc.OrderServiceStub(channel)


def cid() -> str:
    return f"kinds-{uuid4().hex[:20]}"


async def wait_state(
    stub: order_pb2_grpc.OrderServiceAsyncStub,
    order_id: str,
    states: Collection[int],
    timeout_s: float = 15.0,
) -> pb.Order:
    """Poll GetOrder until the order is in one of `states`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        order = (await stub.GetOrder(pb.GetOrderRequest(order_id=order_id))).order
        if order.state in states:
            return order
        assert asyncio.get_running_loop().time() < deadline, (
            f"order {order_id} stuck in {pb.OrderState.Name(order.state)} ({order.reject_reason})"
        )
        await asyncio.sleep(0.05)


async def create(stub: order_pb2_grpc.OrderServiceAsyncStub, **fields: Any) -> pb.CreateOrderResponse:
    fields.setdefault("symbol", "BTCUSDT")
    fields.setdefault("client_order_id", cid())
    return await stub.CreateOrder(pb.CreateOrderRequest(**fields))


async def test_stop_market_waits_then_triggers_and_fills(
    stack: LocalStack, stub: order_pb2_grpc.OrderServiceAsyncStub
) -> None:
    created = await create(stub, side=pb.SELL, type=pb.STOP_MARKET, quantity="0.010", trigger_price="49000")
    waiting = await wait_state(stub, created.order_id, {pb.WAITING_TRIGGER})
    assert waiting.algo_id and not waiting.exchange_order_id
    assert waiting.trigger_price == "49000"

    stack.admin("/admin/price", {"symbol": "BTCUSDT", "price": "48900"})
    filled = await wait_state(stub, created.order_id, FINAL)
    assert filled.state == pb.FILLED, filled.reject_reason
    assert filled.exchange_order_id  # the MARKET order it triggered
    assert filled.filled_quantity == "0.01"
    assert len(filled.fills) >= 1 and sum(float(f.quantity) for f in filled.fills) == pytest.approx(0.01)


async def test_stop_limit_and_take_profit_trigger_into_their_orders(
    stack: LocalStack, stub: order_pb2_grpc.OrderServiceAsyncStub
) -> None:
    stop = await create(
        stub,
        side=pb.BUY,
        type=pb.STOP,
        quantity="0.010",
        price="51100",
        trigger_price="51000",
        working_type=pb.MARK_PRICE,
        price_protect=True,
    )
    take = await create(
        stub, side=pb.SELL, type=pb.TAKE_PROFIT_MARKET, quantity="0.010", trigger_price="51500"
    )
    take_limit = await create(
        stub,
        side=pb.SELL,
        type=pb.TAKE_PROFIT,
        quantity="0.010",
        price="51520",
        trigger_price="51500",
        time_in_force=pb.GTC,
    )
    for created in (stop, take, take_limit):
        await wait_state(stub, created.order_id, {pb.WAITING_TRIGGER})
    stack.admin("/admin/price", {"symbol": "BTCUSDT", "price": "51050"})
    stop_done = await wait_state(stub, stop.order_id, {pb.FILLED})
    assert stop_done.average_price and float(stop_done.average_price) <= 51100
    assert stop_done.working_type == pb.MARK_PRICE and stop_done.price_protect
    still = (await stub.GetOrder(pb.GetOrderRequest(order_id=take.order_id))).order
    assert still.state == pb.WAITING_TRIGGER  # 51050 is below its 51500 trigger
    stack.admin("/admin/price", {"symbol": "BTCUSDT", "price": "51600"})
    await wait_state(stub, take.order_id, {pb.FILLED})
    take_limit_done = await wait_state(stub, take_limit.order_id, {pb.FILLED})
    assert take_limit_done.average_price and float(take_limit_done.average_price) >= 51520


async def test_trailing_stop_follows_the_price(
    stack: LocalStack, stub: order_pb2_grpc.OrderServiceAsyncStub
) -> None:
    created = await create(
        stub, side=pb.SELL, type=pb.TRAILING_STOP_MARKET, quantity="0.010", callback_rate="1"
    )
    await wait_state(stub, created.order_id, {pb.WAITING_TRIGGER})
    stack.admin("/admin/price", {"symbol": "BTCUSDT", "price": "50500"})
    stack.admin("/admin/price", {"symbol": "BTCUSDT", "price": "50100"})  # -0.8% from the top: holds
    await asyncio.sleep(0.3)
    assert (
        await stub.GetOrder(pb.GetOrderRequest(order_id=created.order_id))
    ).order.state == pb.WAITING_TRIGGER
    stack.admin("/admin/price", {"symbol": "BTCUSDT", "price": "49950"})  # -1.1%: fires
    done = await wait_state(stub, created.order_id, FINAL)
    assert done.state == pb.FILLED and done.callback_rate == "1"


async def test_waiting_stop_is_canceled_on_the_algo_service(
    stack: LocalStack, stub: order_pb2_grpc.OrderServiceAsyncStub
) -> None:
    created = await create(stub, side=pb.SELL, type=pb.STOP_MARKET, quantity="0.010", trigger_price="40000")
    await wait_state(stub, created.order_id, {pb.WAITING_TRIGGER})
    await stub.CancelOrder(pb.CancelOrderRequest(order_id=created.order_id))
    assert (await wait_state(stub, created.order_id, FINAL)).state == pb.CANCELED
    stack.admin("/admin/price", {"symbol": "BTCUSDT", "price": "39000"})
    await asyncio.sleep(0.3)
    assert (await stub.GetOrder(pb.GetOrderRequest(order_id=created.order_id))).order.state == pb.CANCELED


async def test_batch_with_failing_items(stub: order_pb2_grpc.OrderServiceAsyncStub) -> None:
    items = [
        pb.CreateOrderRequest(
            symbol="BTCUSDT",
            side=pb.BUY,
            type=pb.LIMIT,
            quantity="0.010",
            price="45000",
            time_in_force=pb.GTC,
            client_order_id=cid(),
        ),
        # Off tick: refused at the gateway, alone.
        pb.CreateOrderRequest(
            symbol="BTCUSDT",
            side=pb.BUY,
            type=pb.LIMIT,
            quantity="0.010",
            price="45000.05",
            time_in_force=pb.GTC,
            client_order_id=cid(),
        ),
        # Post-only that would cross: accepted here, rejected by the exchange (-5022), alone.
        pb.CreateOrderRequest(
            symbol="BTCUSDT",
            side=pb.BUY,
            type=pb.LIMIT,
            quantity="0.010",
            price="50500",
            time_in_force=pb.GTX,
            client_order_id=cid(),
        ),
        pb.CreateOrderRequest(
            symbol="BTCUSDT",
            side=pb.SELL,
            type=pb.STOP_MARKET,
            quantity="0.010",
            trigger_price="40000",
            client_order_id=cid(),
        ),
    ]
    reply = await stub.CreateOrders(pb.CreateOrdersRequest(orders=items))
    results = list(reply.results)
    assert [r.error_code for r in results] == ["", "INVALID_ARGUMENT", "", ""], [
        r.error_message for r in results
    ]
    assert "price" in results[1].error_message and "tick size" in results[1].error_message
    resting, _, crossing, stop = results
    assert (await wait_state(stub, resting.response.order_id, {pb.SUBMITTED})).price == "45000"
    assert (await wait_state(stub, crossing.response.order_id, FINAL)).state == pb.REJECTED
    await wait_state(stub, stop.response.order_id, {pb.WAITING_TRIGGER})

    again = await stub.CreateOrders(pb.CreateOrdersRequest(orders=[items[0], items[3]]))
    assert [r.response.duplicate for r in again.results] == [True, True]
    assert again.results[0].response.order_id == resting.response.order_id

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateOrders(pb.CreateOrdersRequest(orders=[items[0]] * 21))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "orders" in (caught.value.details() or "")
    for item in (resting, stop):
        await stub.CancelOrder(pb.CancelOrderRequest(order_id=item.response.order_id))


async def test_cancel_all_settles_every_open_order(
    stack: LocalStack, stub: order_pb2_grpc.OrderServiceAsyncStub
) -> None:
    limits = [
        await create(stub, side=pb.BUY, type=pb.LIMIT, quantity="0.010", price=p, time_in_force=pb.GTC)
        for p in ("44000", "44100")
    ]
    stop = await create(stub, side=pb.SELL, type=pb.STOP_MARKET, quantity="0.010", trigger_price="30000")
    for order in limits:
        await wait_state(stub, order.order_id, {pb.SUBMITTED})
    await wait_state(stub, stop.order_id, {pb.WAITING_TRIGGER})

    moved = await stub.CancelAllOrders(pb.CancelAllOrdersRequest(symbol="BTCUSDT"))
    ids = {o.order_id for o in moved.orders}
    assert {o.order_id for o in [*limits, stop]} <= ids
    for order in [*limits, stop]:
        assert (await wait_state(stub, order.order_id, FINAL)).state == pb.CANCELED
    still_open = stack.admin("/admin/orders?symbol=BTCUSDT&status=NEW")
    assert isinstance(still_open, list) and still_open == []


async def test_amend_a_resting_limit(stub: order_pb2_grpc.OrderServiceAsyncStub) -> None:
    created = await create(
        stub, side=pb.BUY, type=pb.LIMIT, quantity="0.010", price="45000", time_in_force=pb.GTC
    )
    before = await wait_state(stub, created.order_id, {pb.SUBMITTED})
    answer = await stub.AmendOrder(
        pb.AmendOrderRequest(order_id=created.order_id, price="45100.5", quantity="0.02")
    )
    assert answer.order.order_id == created.order_id
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        order = (await stub.GetOrder(pb.GetOrderRequest(order_id=created.order_id))).order
        if order.price == "45100.5":
            break
        assert asyncio.get_running_loop().time() < deadline, "the amendment never landed"
        await asyncio.sleep(0.05)
    assert order.quantity == "0.02" and order.state == pb.SUBMITTED and order.version > before.version

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AmendOrder(
            pb.AmendOrderRequest(order_id=created.order_id, price="45100.5", quantity="0.02")
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AmendOrder(pb.AmendOrderRequest(order_id=created.order_id, price="45100.05"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "tick size" in (
        caught.value.details() or ""
    )
    await stub.CancelOrder(pb.CancelOrderRequest(order_id=created.order_id))
    await wait_state(stub, created.order_id, FINAL)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AmendOrder(pb.AmendOrderRequest(order_id=created.order_id, price="45200"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def cli(stack: LocalStack, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="order-execution order")
    add_order_commands(parser)
    return run_order_command(parser.parse_args(["--target", stack.grpc_target, *argv]), Settings())


async def test_cli_covers_the_new_kinds_and_calls(
    stack: LocalStack,
    stub: order_pb2_grpc.OrderServiceAsyncStub,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stop_id = cid()
    assert (
        await asyncio.to_thread(
            cli,
            stack,
            "create",
            "btcusdt",
            "sell",
            "0.010",
            "--type",
            "stop_market",
            "--trigger-price",
            "41000",
            "--working-type",
            "mark_price",
            "--client-id",
            stop_id,
            "--json",
        )
        == 0
    )
    created = json.loads(capsys.readouterr().out)["order"]
    assert created["type"] == "STOP_MARKET" and created["trigger_price"] == "41000"
    assert created["working_type"] == "MARK_PRICE"

    lines = tmp_path / "batch.jsonl"
    resting_id = cid()
    lines.write_text(
        json.dumps(
            {
                "symbol": "BTCUSDT",
                "side": "BUY",
                "type": "LIMIT",
                "quantity": "0.010",
                "price": "44000",
                "time_in_force": "GTC",
                "client_order_id": resting_id,
            }
        )
        + "\n\n"
        + json.dumps({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.010"})
        + "\n"
    )
    assert await asyncio.to_thread(cli, stack, "batch", str(lines)) == 1  # the second item fails
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("1: order ") and out[1].startswith("2: INVALID_ARGUMENT: price")
    resting = out[0].split()[2]
    await wait_state(stub, resting, {pb.SUBMITTED})

    assert await asyncio.to_thread(cli, stack, "amend", resting, "--quantity", "0.02") == 0
    assert "amendment queued" in capsys.readouterr().out
    deadline = asyncio.get_running_loop().time() + 10
    while (await stub.GetOrder(pb.GetOrderRequest(order_id=resting))).order.quantity != "0.02":
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)

    assert await asyncio.to_thread(cli, stack, "cancel-all", "btcusdt", "--json") == 0
    moved = {o["order_id"] for o in json.loads(capsys.readouterr().out)["orders"]}
    assert {resting, created["order_id"]} <= moved
    for order_id in (resting, created["order_id"]):
        assert (await wait_state(stub, order_id, FINAL)).state == pb.CANCELED
