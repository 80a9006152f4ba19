"""Failed authentications: counted by reason, logged at most once a second per reason (with
what went unlogged), and answered late without blocking the loop or piling up waiting calls."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace

import fakeredis
import grpc
import pytest
from prometheus_client import REGISTRY

from order_execution.gateway.auth import API_KEY_HEADER, Authenticator, Unauthenticated
from order_execution.gateway.auth_failures import AuthFailures
from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc
from order_execution.runtime.settings import ApiClientSettings, AuthSettings
from order_execution.runtime.settings_access import hash_key
from tests.unit.gateway_harness import serving_gateway

GOOD_KEY = secrets.token_urlsafe(32)  # made per run: nothing here is, or looks like, a real key
SETTINGS = AuthSettings(clients=[ApiClientSettings(name="alice", key_sha256=hash_key(GOOD_KEY))])
WRONG = ((API_KEY_HEADER, secrets.token_urlsafe(32)),)


def failures_counted(reason: str) -> float:
    value = REGISTRY.get_sample_value("order_execution_auth_failures_total", {"reason": reason})
    assert value is not None, f"no series for reason {reason}"
    return value


def test_every_known_reason_has_a_series_and_each_refusal_counts_under_its_reason() -> None:
    auth = Authenticator(SETTINGS)
    before = {reason: failures_counted(reason) for reason in ("missing_key", "invalid_key")}
    for metadata in ((), WRONG, ((API_KEY_HEADER, "x" * 300),)):
        with pytest.raises(Unauthenticated):
            auth.identify(metadata, peer="ipv4:127.0.0.1:5000")
    assert auth.identify(((API_KEY_HEADER, GOOD_KEY),)) is not None  # a good key counts nothing
    assert failures_counted("missing_key") == before["missing_key"] + 1
    assert failures_counted("invalid_key") == before["invalid_key"] + 2


def test_refusals_are_logged_at_most_once_a_second_per_reason(caplog: pytest.LogCaptureFixture) -> None:
    clock = SimpleNamespace(now=100.0)
    failures = AuthFailures(delay_ms=0, max_delayed=1, clock=lambda: clock.now)
    auth = Authenticator(SETTINGS, failures=failures)
    caplog.set_level(logging.WARNING, logger="order_execution.gateway.auth_failures")

    def refuse(count: int, metadata: tuple[tuple[str, str], ...]) -> None:
        for _ in range(count):
            with pytest.raises(Unauthenticated):
                auth.identify(metadata, peer="ipv4:10.0.0.7:4000")

    refuse(500, WRONG)
    refuse(3, ())
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "authentication refused (invalid_key) from ipv4:10.0.0.7:4000",
        "authentication refused (missing_key) from ipv4:10.0.0.7:4000",
    ]
    clock.now += 0.5
    refuse(10, WRONG)
    assert len(caplog.records) == 2
    clock.now += 0.5
    refuse(1, WRONG)
    assert caplog.records[-1].getMessage() == (
        "authentication refused (invalid_key) from ipv4:10.0.0.7:4000; "
        "509 more since the last line, not logged"
    )
    assert len(caplog.records) == 3


async def test_at_most_max_delayed_refusals_wait_and_the_loop_keeps_serving() -> None:
    # A delay far longer than the test: the waiting calls are cancelled at the end, never timed.
    failures = AuthFailures(delay_ms=600_000, max_delayed=3)
    auth = Authenticator(SETTINGS, failures=failures)
    refusals = [asyncio.create_task(auth.authenticate(WRONG)) for _ in range(10)]
    await asyncio.sleep(0)  # each runs to its wait, or to its answer
    await asyncio.sleep(0)
    answered = [task for task in refusals if task.done()]
    assert failures.waiting == 3 and len(answered) == 7
    assert all(isinstance(task.exception(), Unauthenticated) for task in answered)
    # The loop is free meanwhile: a good key is answered at once.
    caller = await asyncio.wait_for(auth.authenticate(((API_KEY_HEADER, GOOD_KEY),)), timeout=30)
    assert caller is not None and caller.name == "alice"
    for task in refusals:
        task.cancel()
    await asyncio.gather(*refusals, return_exceptions=True)
    assert failures.waiting == 0


@pytest.fixture
async def stub() -> AsyncIterator[order_pb2_grpc.OrderServiceAsyncStub]:
    redis = fakeredis.FakeAsyncRedis()
    settings = SETTINGS.model_copy(update={"failure_delay_ms": 200})
    async with (
        serving_gateway(redis, redis, auth=settings) as target,
        grpc.aio.insecure_channel(target) as channel,
    ):
        yield order_pb2_grpc.OrderServiceStub(channel)
    await redis.aclose()


async def test_a_refused_call_is_answered_after_the_delay(stub: order_pb2_grpc.OrderServiceAsyncStub) -> None:
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListOrders(pb.ListOrdersRequest(), metadata=WRONG)
    waited = time.monotonic() - started
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # At least most of the 200 ms delay (a lower bound only: a loaded machine may take longer).
    assert waited >= 0.15
    listed = await stub.ListOrders(pb.ListOrdersRequest(), metadata=((API_KEY_HEADER, GOOD_KEY),))
    assert not listed.orders
