"""Admission of reads and the lifetime of rate buckets.

Reads (GetOrder, ListOrders, a StreamOrderUpdates open) are charged to the same per-client
bucket as writes, at `admission.read_cost` of a request, and refused RESOURCE_EXHAUSTED
naming the limit; a bucket unused for `admission.client_idle_s` and full again is forgotten,
so a flood of caller-chosen user_ids leaves nothing behind. Time is a fake clock here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import fakeredis
import grpc
import pytest

import order_execution.gateway.admission as gateway_admission
from order_execution.gateway.admission import Admission
from order_execution.orders.errors import Overloaded
from order_execution.orders.store import OrderStore
from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc
from order_execution.runtime.settings import AdmissionSettings
from tests.unit.gateway_harness import serving_gateway


def admission(client: fakeredis.FakeAsyncRedis, **settings: Any) -> Admission:
    return Admission(store=OrderStore(client), settings=AdmissionSettings(**settings), max_order_age_ms=5000)


@pytest.fixture
async def fake() -> AsyncIterator[fakeredis.FakeAsyncRedis]:
    client = fakeredis.FakeAsyncRedis()
    yield client
    await client.aclose()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(gateway_admission, "time", SimpleNamespace(monotonic=lambda: clock.now))
    return clock


def test_a_read_costs_read_cost_of_a_request(fake: fakeredis.FakeAsyncRedis, clock: SimpleNamespace) -> None:
    gate = admission(fake, client_requests_per_second=2, client_burst=1, read_cost=0.25)
    for _ in range(4):
        gate.check_client("alice", read=True)
    with pytest.raises(Overloaded) as caught:
        gate.check_client("alice", read=True)
    assert str(caught.value) == (
        "client alice: over 2 requests/s (a read costs admission.read_cost=0.25 of a request); "
        "slow down (retry in 125 ms)"
    )
    assert caught.value.limit == "client_rate"
    clock.now += 0.5  # one request's worth again: a write, or four reads
    gate.check_client("alice")
    with pytest.raises(Overloaded):
        gate.check_client("alice", read=True)


def test_a_burst_of_user_ids_leaves_no_buckets_once_idle(
    fake: fakeredis.FakeAsyncRedis, clock: SimpleNamespace
) -> None:
    gate = admission(fake, client_requests_per_second=200, client_burst=400, client_idle_s=60)
    for n in range(10_000):
        gate.check_client(f"user-{n}")
    assert gate.tracked_clients == 10_000
    clock.now += 30
    gate.check_client("user-0")  # not idle long enough yet: nothing forgotten
    assert gate.tracked_clients == 10_000
    clock.now += 31
    gate.check_client("late")
    # user-0 was used 31 s ago, the rest 61 s ago: only user-0 and the newcomer remain.
    assert gate.tracked_clients == 2


def test_a_bucket_still_refilling_is_kept_so_forgetting_changes_no_answer(
    fake: fakeredis.FakeAsyncRedis, clock: SimpleNamespace
) -> None:
    gate = admission(fake, client_idle_s=60)
    for _ in range(2):
        gate.check_client("slow", rate=0.01, burst=2)  # its own rate: 100 s to refill one request
    clock.now += 61
    gate.check_client("someone-else")
    assert gate.tracked_clients == 2
    with pytest.raises(Overloaded):  # a fresh bucket would have let it through
        gate.check_client("slow", rate=0.01, burst=2)


async def test_reads_over_the_clients_rate_are_resource_exhausted_naming_the_limit(
    fake: fakeredis.FakeAsyncRedis,
) -> None:
    # Two requests' worth, refilled once in 1,000 s: the test's reads cannot earn more.
    gate = admission(fake, client_requests_per_second=0.001, client_burst=2, read_cost=1)
    async with (
        serving_gateway(fake, fake, admission=gate) as target,
        grpc.aio.insecure_channel(target) as channel,
    ):
        stub = order_pb2_grpc.OrderServiceStub(channel)
        await stub.ListOrders(pb.ListOrdersRequest())
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetOrder(pb.GetOrderRequest(order_id="nope"))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND  # charged, then looked up
        for call in (
            stub.GetOrder(pb.GetOrderRequest(order_id="nope")),
            stub.ListOrders(pb.ListOrdersRequest()),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "admission.read_cost=1" in (caught.value.details() or "")
        stream = stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest())
        with pytest.raises(grpc.aio.AioRpcError) as opened:
            await stream.read()
        assert opened.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "requests/s" in (opened.value.details() or "")
