"""The gateway over a real gRPC socket, with the store (and its outbox) on fakeredis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import fakeredis
import grpc
import pytest

from order_execution.orders.model import OrderState
from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc
from order_execution.runtime.redis_connection import open_redis
from order_execution.runtime.settings import RedisSettings
from tests.factories import outbox_orders
from tests.silent_server import silent_server
from tests.unit.gateway_harness import limit_order, running_gateway


class Published:
    """What the gateway wrote to the outbox (the updates streams and NATS get)."""

    def __init__(self, redis: fakeredis.FakeAsyncRedis) -> None:
        self._redis = redis

    async def states(self) -> list[OrderState]:
        return [o.state for o in await outbox_orders(self._redis)]


@pytest.fixture
async def gateway() -> AsyncIterator[
    tuple[order_pb2_grpc.OrderServiceAsyncStub, fakeredis.FakeAsyncRedis, Published]
]:
    redis = fakeredis.FakeAsyncRedis()
    async with running_gateway(redis, redis) as stub:
        yield stub, redis, Published(redis)
    await redis.aclose()


async def test_a_frozen_redis_answers_unavailable_at_once() -> None:
    """Redis accepts connections but never answers (SIGSTOP, a full disk, a network partition)."""
    rules_redis = fakeredis.FakeAsyncRedis()
    async with silent_server() as port:
        client = open_redis(RedisSettings(address=f"127.0.0.1:{port}", socket_timeout_ms=300))
        async with running_gateway(client, rules_redis) as stub:
            started = asyncio.get_running_loop().time()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.CreateOrder(limit_order(client_order_id="retry-me-1"))
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "retry-me-1" in (caught.value.details() or "")  # says how to find out whether it landed
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetOrder(pb.GetOrderRequest(order_id="o1"))
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "did not answer within redis.socket_timeout_ms" in (caught.value.details() or "")
            assert asyncio.get_running_loop().time() - started < 3
        await client.aclose()
    await rules_redis.aclose()


async def test_a_gateway_out_of_redis_connections_says_it_is_overloaded() -> None:
    """Every connection busy (an overloaded gateway): refused at once, and not blamed on Redis."""
    rules_redis = fakeredis.FakeAsyncRedis()
    async with silent_server() as port:
        settings = RedisSettings(address=f"127.0.0.1:{port}", socket_timeout_ms=2000, max_connections=1)
        client = open_redis(settings)
        async with running_gateway(client, rules_redis) as stub:
            first = asyncio.ensure_future(
                stub.CreateOrder(limit_order(client_order_id="holds-the-connection"))
            )
            await asyncio.sleep(0.3)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetOrder(pb.GetOrderRequest(order_id="o1"))
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "redis.max_connections" in (caught.value.details() or "")
            assert "unreachable" not in (caught.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError):
                await first
        await client.aclose()
    await rules_redis.aclose()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"side": pb.SIDE_UNSPECIFIED}, "side: is required (BUY or SELL)"),
        ({"quantity": "0"}, "quantity: must be greater than zero"),
        ({"price": "50000.05"}, "price: must be a multiple of tick size 0.1"),
        ({"symbol": "DOGEUSDT"}, "symbol: DOGEUSDT is not traded here"),
        ({"quantity": "0.00x"}, "quantity: must be a plain decimal string"),
        ({"price": "5e4"}, "price: must be a plain decimal string"),
    ],
)
async def test_invalid_requests_change_nothing(gateway: Any, changes: dict[str, Any], message: str) -> None:
    stub, redis, bus = gateway
    before = sorted(await redis.keys("*"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateOrder(limit_order(**changes))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (caught.value.details() or "")
    assert sorted(await redis.keys("*")) == before  # nothing stored, nothing queued
    assert await bus.states() == []


async def test_create_then_duplicate_client_id(gateway: Any) -> None:
    stub, redis, bus = gateway
    first = await stub.CreateOrder(limit_order(client_order_id="strategy-7:1"))
    assert first.state == pb.NEW and not first.duplicate
    assert first.order.price == "50000" and first.order.quantity == "0.002"
    again = await stub.CreateOrder(limit_order(client_order_id="strategy-7:1"))
    assert again.duplicate and again.order_id == first.order_id
    assert await redis.llen("dramatiq:orders.BTCUSDT") == 1
    got = await stub.GetOrder(pb.GetOrderRequest(order_id=first.order_id))
    assert got.order.client_order_id == "strategy-7:1"
    await asyncio.sleep(0.05)
    assert await bus.states() == [OrderState.NEW]  # the duplicate publishes nothing


async def test_cancel_before_send_is_local_and_final(gateway: Any) -> None:
    stub, _, bus = gateway
    created = await stub.CreateOrder(limit_order())
    canceled = await stub.CancelOrder(pb.CancelOrderRequest(order_id=created.order_id))
    assert canceled.state == pb.CANCELED
    await asyncio.sleep(0.05)
    assert await bus.states() == [OrderState.NEW, OrderState.CANCELED]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CancelOrder(pb.CancelOrderRequest(order_id=created.order_id))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_unknown_ids_and_bad_arguments(gateway: Any) -> None:
    stub, _, _ = gateway
    for call in (
        stub.GetOrder(pb.GetOrderRequest(order_id="nope")),
        stub.CancelOrder(pb.CancelOrderRequest(order_id="nope")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    created = await stub.CreateOrder(limit_order())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CancelOrder(pb.CancelOrderRequest(order_id=created.order_id, symbol="ETHUSDT"))
    assert "symbol: does not match" in (caught.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListOrders(pb.ListOrdersRequest(limit=501))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_and_stream(gateway: Any) -> None:
    stub, _, _ = gateway
    stream = stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest(symbols=["BTCUSDT"]))
    created = [await stub.CreateOrder(limit_order()) for _ in range(3)]
    updates = [await stream.read() for _ in range(3)]
    assert [u.order.order_id for u in updates] == [c.order_id for c in created]
    assert all(u.update_type == "NEW" for u in updates)
    stream.cancel()
    listed = await stub.ListOrders(pb.ListOrdersRequest(symbol="BTCUSDT", state=pb.NEW, limit=2))
    assert len(listed.orders) == 2 and listed.next_page_token
    rest = await stub.ListOrders(
        pb.ListOrdersRequest(symbol="BTCUSDT", limit=2, page_token=listed.next_page_token)
    )
    ids = {o.order_id for o in listed.orders} | {o.order_id for o in rest.orders}
    assert ids == {c.order_id for c in created}
    assert Decimal(rest.orders[0].price) == Decimal("50000")


HUGE = "9" * 10_000


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"quantity": HUGE}, "quantity: must be at most 40 characters, got 10000"),
        ({"price": HUGE}, "price: must be at most 40 characters, got 10000"),
        ({"symbol": "X" * 10_000}, "symbol: must be at most 30 characters, got 10000"),
        ({"client_order_id": "c" * 10_000}, "client_order_id: must be 1-36 characters of"),
        ({"user_id": "u" * 10_000}, "user_id: must be at most 64 characters, got 10000"),
        ({"user_id": "desk 7"}, "user_id: must be printable ASCII without spaces"),
        # Full-width digits (U+FF10-FF19), which Python's Decimal accepts as "0.002" and "50000":
        (
            {"quantity": "\uff10.\uff10\uff10\uff12"},
            "quantity: must be a plain decimal string like '0.001' (ASCII digits",
        ),
        (
            {"price": "\uff15\uff10\uff10\uff10\uff10"},
            "price: must be a plain decimal string like '0.001' (ASCII digits",
        ),
        (
            {"price": "5\u0660\u0660\u0660\u0660"},
            "price: must be a plain decimal string",
        ),  # Arabic-Indic zeros
        ({"quantity": "0.002x" + "9" * 30}, "quantity: must be a plain decimal string"),
    ],
)
async def test_oversized_and_non_ascii_fields_get_a_short_clear_error(
    gateway: Any, changes: dict[str, Any], message: str
) -> None:
    stub, redis, _ = gateway
    before = sorted(await redis.keys("*"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateOrder(limit_order(**changes))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details() or ""
    assert details.startswith(message)
    assert len(details) < 200  # quotes at most a short prefix of the value
    assert sorted(await redis.keys("*")) == before


async def test_a_long_bad_value_is_quoted_by_its_prefix(gateway: Any) -> None:
    stub, _, _ = gateway
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateOrder(limit_order(quantity="0.002x" + "9" * 30))
    assert caught.value.details() == (
        "quantity: must be a plain decimal string like '0.001' (ASCII digits and '.'), "
        "got '0.002x9999999999'... (36 characters)"
    )


async def test_every_other_string_field_is_bounded(gateway: Any) -> None:
    stub, _, _ = gateway
    calls = [
        (stub.GetOrder(pb.GetOrderRequest(order_id=HUGE)), "order_id: must be at most 64 characters"),
        (stub.CancelOrder(pb.CancelOrderRequest(order_id=HUGE)), "order_id: must be at most 64 characters"),
        (
            stub.CancelOrder(pb.CancelOrderRequest(order_id="o1", symbol=HUGE)),
            "symbol: must be at most 30 characters",
        ),
        (stub.ListOrders(pb.ListOrdersRequest(symbol=HUGE)), "symbol: must be at most 30 characters"),
        (
            stub.ListOrders(pb.ListOrdersRequest(page_token=HUGE)),
            "page_token: must be at most 256 characters",
        ),
        (
            stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest(resume_token=HUGE)).read(),
            "resume_token: must be at most 64 characters",
        ),
        (
            stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest(user_id=HUGE)).read(),
            "user_id: must be at most 64 characters",
        ),
        (
            stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest(symbols=["BTCUSDT", HUGE])).read(),
            "symbols: must be at most 30 characters",
        ),
        (
            stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest(symbols=["BTCUSDT"] * 101)).read(),
            "symbols: at most 100 symbols per stream, got 101",
        ),
    ]
    for call, message in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, message
        assert (caught.value.details() or "").startswith(message)
