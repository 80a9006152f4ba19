"""One order's whole path on real parts: gRPC -> Dramatiq on Redis -> signed REST ->
simulator -> Redis -> NATS -> gRPC stream, with each process on its own."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import grpc
import nats
import pytest

from order_execution.launcher.stack import LocalStack
from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc

pytestmark = pytest.mark.integration

FINAL = {pb.FILLED, pb.CANCELED, pb.REJECTED, pb.EXPIRED}


async def collect_stream(stub: order_pb2_grpc.OrderServiceAsyncStub, sink: dict[str, list[int]]) -> None:
    stream = stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest(symbols=["BTCUSDT", "ETHUSDT"]))
    async for update in stream:
        sink.setdefault(update.order.order_id, []).append(update.order.state)


async def wait_for(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting for the expected updates"
        await asyncio.sleep(0.05)


@pytest.fixture
async def stub(service: LocalStack) -> AsyncIterator[order_pb2_grpc.OrderServiceAsyncStub]:
    async with grpc.aio.insecure_channel(service.grpc_target) as channel:
        yield order_pb2_grpc.OrderServiceStub(channel)


async def test_limit_market_and_cancel_reach_every_observer(
    service: LocalStack, stub: order_pb2_grpc.OrderServiceAsyncStub
) -> None:
    nats_seen: dict[str, list[str]] = {}
    nc = await nats.connect(service.nats_url)

    async def on_nats(msg: Any) -> None:
        payload = json.loads(msg.data)
        nats_seen.setdefault(payload["order"]["order_id"], []).append(payload["update_type"])

    await nc.subscribe("orders.updates.*", cb=on_nats)
    stream_seen: dict[str, list[int]] = {}
    streaming = asyncio.create_task(collect_stream(stub, stream_seen))
    await asyncio.sleep(0.3)  # let the stream register before orders flow

    resting = await stub.CreateOrder(
        pb.CreateOrderRequest(
            symbol="BTCUSDT",
            side=pb.BUY,
            type=pb.LIMIT,
            quantity="0.003",
            price="49000.0",
            time_in_force=pb.GTC,
        )
    )
    market = await stub.CreateOrder(
        pb.CreateOrderRequest(symbol="BTCUSDT", side=pb.SELL, type=pb.MARKET, quantity="0.002")
    )
    to_cancel = await stub.CreateOrder(
        pb.CreateOrderRequest(
            symbol="ETHUSDT", side=pb.BUY, type=pb.LIMIT, quantity="0.010", price="2900.00", post_only=True
        )
    )
    assert {resting.state, market.state, to_cancel.state} == {pb.NEW}

    await wait_for(lambda: pb.SUBMITTED in stream_seen.get(to_cancel.order_id, []))
    canceled = await stub.CancelOrder(pb.CancelOrderRequest(order_id=to_cancel.order_id, symbol="ETHUSDT"))
    assert canceled.state in (pb.PENDING_CANCEL, pb.CANCELED)

    expected = {resting.order_id: pb.SUBMITTED, market.order_id: pb.FILLED, to_cancel.order_id: pb.CANCELED}
    await wait_for(lambda: all(state in stream_seen.get(oid, []) for oid, state in expected.items()))
    await wait_for(
        lambda: all(pb.OrderState.Name(s) in nats_seen.get(oid, []) for oid, s in expected.items())
    )
    streaming.cancel()
    await nc.close()

    for order_id, state in expected.items():
        got = (await stub.GetOrder(pb.GetOrderRequest(order_id=order_id))).order
        assert got.state == state, f"{order_id}: {pb.OrderState.Name(got.state)}"
        assert got.exchange_order_id, "the exchange's order id is recorded"
        assert stream_seen[order_id][0] == pb.NEW
        assert stream_seen[order_id][-1] == state
    filled = (await stub.GetOrder(pb.GetOrderRequest(order_id=market.order_id))).order
    records = service.admin(f"/admin/orders?clientOrderId={market.client_order_id}")
    assert isinstance(records, list) and len(records) == 1
    at_exchange = records[0]
    assert filled.filled_quantity == "0.002" and at_exchange["executedQty"] == "0.002"
    # A SELL at the best bid, a few ticks under the 50000 reference price; the same price we recorded.
    assert Decimal("49999.7") <= Decimal(filled.average_price) == Decimal(at_exchange["avgPrice"]) <= 50000

    # The exchange saw each order exactly once, signed with our client id.
    for reply in (resting, market, to_cancel):
        posts = service.admin(
            f"/admin/requests?method=POST&path=/fapi/v1/order&clientOrderId={reply.client_order_id}"
        )
        assert isinstance(posts, list) and len(posts) == 1 and posts[0]["status"] == 200
    orders = service.admin("/admin/orders?symbol=ETHUSDT")
    assert isinstance(orders, list)
    [eth] = [o for o in orders if o["clientOrderId"] == to_cancel.client_order_id]
    assert eth["status"] == "CANCELED" and eth["timeInForce"] == "GTX"


async def test_listing_and_idempotent_create(
    service: LocalStack, stub: order_pb2_grpc.OrderServiceAsyncStub
) -> None:
    request = pb.CreateOrderRequest(
        symbol="ETHUSDT",
        side=pb.SELL,
        type=pb.LIMIT,
        quantity="0.010",
        price="3100.00",
        time_in_force=pb.GTC,
        client_order_id="it-idem-1",
    )
    first = await stub.CreateOrder(request)
    second = await stub.CreateOrder(request)
    assert second.duplicate and second.order_id == first.order_id
    await asyncio.sleep(1.0)
    posts = service.admin("/admin/requests?method=POST&path=/fapi/v1/order&clientOrderId=it-idem-1")
    assert isinstance(posts, list) and len(posts) == 1
    listed = await stub.ListOrders(pb.ListOrdersRequest(symbol="ETHUSDT", limit=100))
    assert first.order_id in {o.order_id for o in listed.orders}
    assert all(o.symbol == "ETHUSDT" for o in listed.orders)


async def test_invalid_request_over_the_wire(
    service: LocalStack, stub: order_pb2_grpc.OrderServiceAsyncStub
) -> None:
    before = service.admin("/admin/requests?method=POST&path=/fapi/v1/order")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateOrder(pb.CreateOrderRequest(symbol="BTCUSDT", type=pb.MARKET, quantity="0.002"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("side:")
    await asyncio.sleep(0.3)
    assert service.admin("/admin/requests?method=POST&path=/fapi/v1/order") == before
