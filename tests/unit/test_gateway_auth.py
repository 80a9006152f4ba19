"""API keys, per-client scoping and client_order_id reuse, over a real gRPC socket."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import grpc
import pytest

from order_execution.gateway.auth import API_KEY_HEADER
from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc
from order_execution.runtime.settings import ApiClientSettings, AuthSettings
from order_execution.runtime.settings_access import hash_key
from tests.unit.gateway_harness import limit_order, serving_gateway

# Keys are made per test run: nothing here looks like, or is, a real credential.
ALICE_KEY, BOB_KEY, ETH_ONLY_KEY = (secrets.token_urlsafe(32) for _ in range(3))
AUTH = AuthSettings(
    clients=[
        ApiClientSettings(name="alice", key_sha256=hash_key(ALICE_KEY)),
        ApiClientSettings(name="bob", key_sha256=hash_key(BOB_KEY)),
        ApiClientSettings(name="eth-desk", key_sha256=hash_key(ETH_ONLY_KEY), allowed_symbols=["ETHUSDT"]),
    ]
)


def key(api_key: str) -> tuple[tuple[str, str], ...]:
    return ((API_KEY_HEADER, api_key),)


ALICE, BOB, ETH_ONLY = key(ALICE_KEY), key(BOB_KEY), key(ETH_ONLY_KEY)


@pytest.fixture
async def stub() -> AsyncIterator[order_pb2_grpc.OrderServiceAsyncStub]:
    redis = fakeredis.FakeAsyncRedis()
    async with (
        serving_gateway(redis, redis, auth=AUTH) as target,
        grpc.aio.insecure_channel(target) as channel,
    ):
        yield order_pb2_grpc.OrderServiceStub(channel)
    await redis.aclose()


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_no_key_and_a_wrong_key_are_refused_alike(stub: Any) -> None:
    wrong = key(secrets.token_urlsafe(32))
    for metadata in ((), wrong, key(""), key("x" * 300)):
        for call in (
            stub.CreateOrder(limit_order(), metadata=metadata),
            stub.GetOrder(pb.GetOrderRequest(order_id="o1"), metadata=metadata),
            stub.CancelOrder(pb.CancelOrderRequest(order_id="o1"), metadata=metadata),
            stub.ListOrders(pb.ListOrdersRequest(), metadata=metadata),
        ):
            error = await refused(call)
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert error.details() == "missing or invalid API key (send it as gRPC metadata 'x-api-key')"
    stream = stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest(), metadata=wrong)
    error = await refused(stream.read())
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    # Nothing was stored by the refused creates: a valid key lists nothing.
    assert not (await stub.ListOrders(pb.ListOrdersRequest(), metadata=ALICE)).orders


async def test_a_valid_key_trades_and_a_symbol_not_allowed_is_denied(stub: Any) -> None:
    created = await stub.CreateOrder(limit_order(), metadata=ALICE)
    assert created.state == pb.NEW
    error = await refused(stub.CreateOrder(limit_order(), metadata=ETH_ONLY))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "BTCUSDT" in (error.details() or "") and "eth-desk" in (error.details() or "")
    eth = await stub.CreateOrder(
        limit_order(symbol="ETHUSDT", quantity="0.05", price="3000"), metadata=ETH_ONLY
    )
    assert eth.state == pb.NEW


async def test_a_client_sees_and_cancels_only_its_own_orders(stub: Any) -> None:
    mine = await stub.CreateOrder(limit_order(), metadata=ALICE)
    theirs = await stub.CreateOrder(limit_order(), metadata=BOB)
    for call in (
        stub.GetOrder(pb.GetOrderRequest(order_id=theirs.order_id), metadata=ALICE),
        stub.CancelOrder(pb.CancelOrderRequest(order_id=theirs.order_id), metadata=ALICE),
    ):
        error = await refused(call)
        # The same answer as an id never used: ids cannot be probed.
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert error.details() == f"order {theirs.order_id!r} not found"
    assert (await stub.GetOrder(pb.GetOrderRequest(order_id=mine.order_id), metadata=ALICE)).order.order_id
    still = await stub.GetOrder(pb.GetOrderRequest(order_id=theirs.order_id), metadata=BOB)
    assert still.order.state == pb.NEW  # alice's cancel did not touch it

    for request in (pb.ListOrdersRequest(), pb.ListOrdersRequest(symbol="BTCUSDT", state=pb.NEW)):
        listed = await stub.ListOrders(request, metadata=ALICE)
        assert [o.order_id for o in listed.orders] == [mine.order_id]
    assert [o.order_id for o in (await stub.ListOrders(pb.ListOrdersRequest(), metadata=BOB)).orders] == [
        theirs.order_id
    ]
    canceled = await stub.CancelOrder(pb.CancelOrderRequest(order_id=mine.order_id), metadata=ALICE)
    assert canceled.state == pb.CANCELED


async def test_the_update_stream_carries_only_the_callers_orders(stub: Any) -> None:
    alice_stream = stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest(), metadata=ALICE)
    bob_stream = stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest(symbols=["BTCUSDT"]), metadata=BOB)
    await asyncio.sleep(0.1)  # both registered
    bobs = await stub.CreateOrder(limit_order(), metadata=BOB)
    alices = await stub.CreateOrder(limit_order(), metadata=ALICE)
    await stub.CancelOrder(pb.CancelOrderRequest(order_id=bobs.order_id), metadata=BOB)
    first = await asyncio.wait_for(alice_stream.read(), 2)
    assert first.order.order_id == alices.order_id
    got = [await asyncio.wait_for(bob_stream.read(), 2) for _ in range(2)]
    assert [(u.order.order_id, u.update_type) for u in got] == [
        (bobs.order_id, "NEW"),
        (bobs.order_id, "CANCELED"),
    ]
    # Resuming replays from the outbox: still only the caller's own orders.
    resumed = stub.StreamOrderUpdates(
        pb.StreamOrderUpdatesRequest(resume_token=got[0].resume_token), metadata=ALICE
    )
    await stub.CreateOrder(limit_order(client_order_id="alice-2"), metadata=ALICE)
    replayed = await asyncio.wait_for(resumed.read(), 2)
    assert replayed.order.order_id == alices.order_id
    live = await asyncio.wait_for(resumed.read(), 2)
    assert live.order.client_order_id == "alice-2"
    for stream in (alice_stream, bob_stream, resumed):
        stream.cancel()


async def test_another_clients_client_order_id_is_refused(stub: Any) -> None:
    first = await stub.CreateOrder(limit_order(client_order_id="shared-1"), metadata=ALICE)
    error = await refused(stub.CreateOrder(limit_order(client_order_id="shared-1"), metadata=BOB))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    details = error.details() or ""
    assert details.startswith("client_order_id: 'shared-1' is already used") and "another client" in details
    assert first.order_id not in details  # nothing of alice's order leaks
    assert not (await stub.ListOrders(pb.ListOrdersRequest(), metadata=BOB)).orders


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"symbol": "ETHUSDT", "price": "30000"}, "symbol"),
        ({"side": pb.SELL}, "side"),
        ({"type": pb.MARKET, "price": "", "time_in_force": pb.TIF_UNSPECIFIED}, "type"),
        ({"quantity": "0.003"}, "quantity"),
        ({"price": "50000.1"}, "price"),
        ({"time_in_force": pb.IOC}, "time_in_force"),
    ],
)
async def test_a_client_order_id_reused_for_a_different_order_is_refused(
    stub: Any, changes: dict[str, Any], field: str
) -> None:
    first = await stub.CreateOrder(limit_order(client_order_id="retry-7"), metadata=ALICE)
    error = await refused(stub.CreateOrder(limit_order(client_order_id="retry-7", **changes), metadata=ALICE))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert (error.details() or "").startswith(f"{field}: differs from the order already placed")
    # An identical retry (same decimal value, written differently) is still the original.
    again = await stub.CreateOrder(
        limit_order(client_order_id="retry-7", quantity="0.0020", price="50000"), metadata=ALICE
    )
    assert again.duplicate and again.order_id == first.order_id


async def test_listing_pages_through_the_callers_orders_only(stub: Any) -> None:
    mine = []
    for _ in range(3):
        mine.append((await stub.CreateOrder(limit_order(), metadata=ALICE)).order_id)
        await stub.CreateOrder(limit_order(), metadata=BOB)
        await stub.CreateOrder(
            limit_order(symbol="ETHUSDT", quantity="0.01", price="3000"), metadata=ETH_ONLY
        )
    first = await stub.ListOrders(pb.ListOrdersRequest(limit=2), metadata=ALICE)
    rest = await stub.ListOrders(
        pb.ListOrdersRequest(limit=2, page_token=first.next_page_token), metadata=ALICE
    )
    listed = [o.order_id for o in [*first.orders, *rest.orders]]
    assert len(listed) == 3 and set(listed) == set(mine)
    assert not rest.next_page_token
    eth_only = await stub.ListOrders(pb.ListOrdersRequest(symbol="ETHUSDT"), metadata=ALICE)
    assert not eth_only.orders


async def test_with_auth_on_and_no_clients_configured_every_call_is_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis = fakeredis.FakeAsyncRedis()
    async with (
        serving_gateway(redis, redis, auth=AuthSettings()) as target,
        grpc.aio.insecure_channel(target) as channel,
    ):
        error = await refused(
            order_pb2_grpc.OrderServiceStub(channel).CreateOrder(limit_order(), metadata=ALICE)
        )
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "auth.clients is empty" in caplog.text
    await redis.aclose()
