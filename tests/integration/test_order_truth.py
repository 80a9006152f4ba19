"""After the acknowledgement: fills, outside cancels, a silent user stream, a worker that
boots with orders already queued, and a stream that resumes where it left off. Each runs
on the real processes (gateway, worker, listener, simulator) over Redis and NATS."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import grpc
import nats
import pytest

from order_execution.exchange.client import BinanceClient
from order_execution.launcher.stack import LocalStack
from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc

pytestmark = pytest.mark.integration

if TYPE_CHECKING:
    Stub = order_pb2_grpc.OrderServiceAsyncStub


@pytest.fixture
async def stub(service: LocalStack) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(service.grpc_target) as channel:
        yield order_pb2_grpc.OrderServiceStub(channel)


@pytest.fixture
async def exchange(service: LocalStack) -> AsyncIterator[BinanceClient]:
    """Another session on the service's account: it can do things behind the service's back."""
    client = BinanceClient(service.exchange_base, api_key=service.api_key, secret_key=service.secret_key)
    yield client
    await client.close()


async def eventually(
    stub: Stub, order_id: str, check: Callable[[pb.Order], bool], timeout_s: float = 15
) -> pb.Order:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        order = (await stub.GetOrder(pb.GetOrderRequest(order_id=order_id))).order
        if check(order):
            return order
        assert asyncio.get_running_loop().time() < deadline, f"gave up waiting; order is {order}"
        await asyncio.sleep(0.1)


def resting_buy(
    symbol: str = "BTCUSDT", quantity: str = "0.004", price: str = "49000.0"
) -> pb.CreateOrderRequest:
    return pb.CreateOrderRequest(
        symbol=symbol, side=pb.BUY, type=pb.LIMIT, quantity=quantity, price=price, time_in_force=pb.GTC
    )


def sim_trades(service: LocalStack, client_order_id: str) -> list[dict[str, Any]]:
    trades = service.admin("/admin/trades")
    assert isinstance(trades, list)
    return [t for t in trades if t["clientOrderId"] == client_order_id]


async def test_a_resting_order_fills_partly_then_fully_with_every_fill_and_fee(
    service: LocalStack, stub: Stub
) -> None:
    fills_on_nats: list[dict[str, Any]] = []
    nc = await nats.connect(service.nats_url)

    async def on_fill(msg: Any) -> None:
        fills_on_nats.append(json.loads(msg.data))

    await nc.subscribe("orders.fills.BTCUSDT", cb=on_fill)
    created = await stub.CreateOrder(resting_buy())
    await eventually(stub, created.order_id, lambda o: o.state == pb.SUBMITTED)
    try:
        service.admin("/admin/price", {"symbol": "BTCUSDT", "price": "48990", "liquidity": "0.001"})
        partial = await eventually(stub, created.order_id, lambda o: o.state == pb.PARTIALLY_FILLED)
        assert partial.filled_quantity == "0.001" and len(partial.fills) == 1
        for _ in range(3):  # each fall through its price fills at most `liquidity`
            service.admin("/admin/price", {"symbol": "BTCUSDT", "price": "48995"})
            service.admin("/admin/price", {"symbol": "BTCUSDT", "price": "48990"})
        filled = await eventually(
            stub, created.order_id, lambda o: o.state == pb.FILLED and len(o.fills) == 4
        )
    finally:
        service.admin("/admin/price", {"symbol": "BTCUSDT", "price": "50000", "liquidity": None})

    trades = sim_trades(service, created.client_order_id)
    assert sorted(f.trade_id for f in filled.fills) == sorted(str(t["id"]) for t in trades)
    assert Decimal(filled.fee) == sum(Decimal(t["commission"]) for t in trades) > 0
    assert filled.fee_asset == "USDT" and all(f.maker for f in filled.fills)
    assert filled.filled_quantity == "0.004" and Decimal(filled.average_price) == Decimal("49000")
    deadline = asyncio.get_running_loop().time() + 5
    while len([f for f in fills_on_nats if f["order_id"] == created.order_id]) < 4:
        assert asyncio.get_running_loop().time() < deadline, f"fills on NATS: {fills_on_nats}"
        await asyncio.sleep(0.1)
    await nc.close()
    published = [f["fill"]["trade_id"] for f in fills_on_nats if f["order_id"] == created.order_id]
    assert sorted(published) == sorted(f.trade_id for f in filled.fills)  # each trade once


async def test_an_order_canceled_at_the_exchange_by_someone_else_ends_canceled(
    service: LocalStack, stub: Stub, exchange: BinanceClient
) -> None:
    created = await stub.CreateOrder(resting_buy(price="48000.0"))
    await eventually(stub, created.order_id, lambda o: o.state == pb.SUBMITTED)
    await exchange.cancel_order("BTCUSDT", created.client_order_id)
    canceled = await eventually(stub, created.order_id, lambda o: o.state == pb.CANCELED)
    assert canceled.filled_quantity == "0"


async def test_a_silent_user_stream_is_made_up_for_by_the_reconciler(
    service: LocalStack, stub: Stub, exchange: BinanceClient
) -> None:
    resting = await stub.CreateOrder(resting_buy(price="47000.0"))
    await eventually(stub, resting.order_id, lambda o: o.state == pb.SUBMITTED)
    # From here the stream swallows every event: only the reconciler can learn what happens.
    service.admin("/admin/faults", {"endpoint": "*", "kind": "user_stream_silent", "count": 20})
    try:
        await exchange.cancel_order("BTCUSDT", resting.client_order_id)
        market = await stub.CreateOrder(
            pb.CreateOrderRequest(symbol="BTCUSDT", side=pb.SELL, type=pb.MARKET, quantity="0.002")
        )
        await eventually(stub, resting.order_id, lambda o: o.state == pb.CANCELED)
        filled = await eventually(stub, market.order_id, lambda o: o.state == pb.FILLED and len(o.fills) > 0)
    finally:
        urllib_delete_faults(service)
    trades = sim_trades(service, market.client_order_id)
    assert Decimal(filled.fee) == sum(Decimal(t["commission"]) for t in trades) > 0


def urllib_delete_faults(service: LocalStack) -> None:
    request = urllib.request.Request(f"{service.exchange_base}/admin/faults", method="DELETE")
    with urllib.request.urlopen(request, timeout=5):
        pass


async def test_orders_queued_before_a_worker_boots_are_sent(service: LocalStack, stub: Stub) -> None:
    worker = service.processes["worker"]
    worker.stop()
    try:
        created = [
            await stub.CreateOrder(
                pb.CreateOrderRequest(symbol="ETHUSDT", side=pb.BUY, type=pb.MARKET, quantity="0.050")
            )
            for _ in range(5)
        ]
    finally:
        worker.start()
    for reply in created:
        done = await eventually(stub, reply.order_id, lambda o: o.state == pb.FILLED)
        assert done.filled_quantity == "0.05"


async def test_a_stream_resumed_with_its_token_gets_what_it_missed_once(
    service: LocalStack, stub: Stub
) -> None:
    seen: list[pb.OrderUpdate] = []
    call = stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest(symbols=["BTCUSDT"]))

    submitted = asyncio.Event()
    wanted: list[str] = []

    async def read_until_submitted() -> None:
        async for update in call:
            seen.append(update)
            if update.order.order_id in wanted and update.order.state == pb.SUBMITTED:
                submitted.set()
                return

    reading = asyncio.create_task(read_until_submitted())
    await asyncio.sleep(0.3)  # the stream is registered before the order exists
    first = await stub.CreateOrder(resting_buy(price="46000.0"))
    wanted.append(first.order_id)
    await asyncio.wait_for(submitted.wait(), timeout=10)
    await reading
    call.cancel()
    token = seen[-1].resume_token
    assert token and seen[-1].order.order_id == first.order_id

    # While disconnected: a cancel and two more orders.
    await stub.CancelOrder(pb.CancelOrderRequest(order_id=first.order_id))
    missed = [await stub.CreateOrder(resting_buy(price=f"4500{n}.0")) for n in range(2)]
    for reply in missed:
        await eventually(stub, reply.order_id, lambda o: o.state == pb.SUBMITTED)
    await eventually(stub, first.order_id, lambda o: o.state == pb.CANCELED)

    resumed: list[pb.OrderUpdate] = []
    call = stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest(symbols=["BTCUSDT"], resume_token=token))

    async def read() -> None:
        async for update in call:
            resumed.append(update)
            ids = {(u.order.order_id, u.order.state) for u in resumed}
            if (first.order_id, pb.CANCELED) in ids and all(
                (r.order_id, pb.SUBMITTED) in ids for r in missed
            ):
                return

    await asyncio.wait_for(read(), timeout=10)
    call.cancel()
    versions = [(u.order.order_id, u.order.version) for u in resumed]
    assert len(versions) == len(set(versions)), "no update twice"
    ours = [u for u in resumed if u.order.order_id == first.order_id]
    assert [pb.OrderState.Name(u.order.state) for u in ours] == ["PENDING_CANCEL", "CANCELED"]
    for reply in missed:
        states = [u.order.state for u in resumed if u.order.order_id == reply.order_id]
        assert states[0] == pb.NEW and states[-1] == pb.SUBMITTED
        mine = [u.order.version for u in resumed if u.order.order_id == reply.order_id]
        assert mine == sorted(mine)

    with pytest.raises(grpc.aio.AioRpcError) as bad:
        async for _ in stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest(resume_token="yesterday")):
            pass
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "resume_token" in str(bad.value.details())
