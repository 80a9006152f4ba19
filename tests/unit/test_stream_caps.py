"""StreamOrderUpdates is bounded: streams per client and in all, and a replay stops at its overflow.

The caps are checked over a real gRPC socket (the unit gateway harness, on fakeredis); the
replay on the hub itself, counting the outbox entries it decodes.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import fakeredis
import grpc
import pytest

from order_execution.gateway.auth import API_KEY_HEADER
from order_execution.gateway.updates import SlowSubscriber, UpdateHub
from order_execution.orders import outbox as outbox_module
from order_execution.orders.outbox import Outbox
from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc
from order_execution.runtime.settings import ApiClientSettings, AuthSettings
from order_execution.runtime.settings_access import hash_key
from tests.factories import make_order
from tests.unit import gateway_harness

# Keys are made per test run: nothing here looks like, or is, a real credential.
KEYS = {name: secrets.token_urlsafe(32) for name in ("alice", "bob", "carol")}
AUTH = AuthSettings(
    clients=[ApiClientSettings(name=name, key_sha256=hash_key(key)) for name, key in KEYS.items()]
)


def as_client(name: str) -> tuple[tuple[str, str], ...]:
    return ((API_KEY_HEADER, KEYS[name]),)


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    # A wide bound (the gateway registers a stream within milliseconds): it only stops a hang.
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@pytest.fixture
def hubs(monkeypatch: pytest.MonkeyPatch) -> list[UpdateHub]:
    """The hubs the harness builds, with caps of 2 streams per client and 3 in all."""
    built: list[UpdateHub] = []

    def capped(outbox: Outbox, **kwargs: Any) -> UpdateHub:
        hub = UpdateHub(outbox, max_streams=3, max_streams_per_client=2, **kwargs)
        built.append(hub)
        return hub

    monkeypatch.setattr(gateway_harness, "UpdateHub", capped)
    return built


@pytest.fixture
async def stub(hubs: list[UpdateHub]) -> AsyncIterator[order_pb2_grpc.OrderServiceAsyncStub]:
    redis = fakeredis.FakeAsyncRedis()
    async with (
        gateway_harness.serving_gateway(redis, redis, auth=AUTH) as target,
        grpc.aio.insecure_channel(target) as channel,
    ):
        yield order_pb2_grpc.OrderServiceStub(channel)
    await redis.aclose()


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    return caught.value


async def test_a_client_over_its_cap_is_refused_naming_the_cap(stub: Any, hubs: list[UpdateHub]) -> None:
    (hub,) = hubs
    held = [
        stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest(), metadata=as_client("alice")) for _ in "ab"
    ]
    await wait_until(lambda: hub.open_streams == 2, "alice's two streams")

    third = await refused(
        stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest(), metadata=as_client("alice"))
    )
    assert third.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "server.max_streams_per_client = 2" in (third.details() or "")
    assert "alice" in (third.details() or "")

    # Another client still gets one: the cap is alice's, not the gateway's.
    bobs = stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest(), metadata=as_client("bob"))
    await wait_until(lambda: hub.open_streams == 3, "bob's stream")

    # Now the gateway is full: carol, with none of her own, is refused by the global cap.
    full = await refused(stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest(), metadata=as_client("carol")))
    assert full.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "server.max_streams = 3" in (full.details() or "")

    # A stream that ends gives its place back.
    held[0].cancel()
    await wait_until(lambda: hub.open_streams == 2, "alice's first stream to end")
    again = stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest(), metadata=as_client("alice"))
    await wait_until(lambda: hub.open_streams == 3, "alice's stream in the freed place")
    for call in (held[1], bobs, again):
        call.cancel()
    await wait_until(lambda: hub.open_streams == 0, "every stream to end")


async def test_a_resume_token_past_64_bits_is_bad_input_naming_the_field(stub: Any) -> None:
    for token in ("99999999999999999999-0", "1-99999999999999999999"):
        error = await refused(
            stub.StreamOrderUpdates(
                pb.StreamOrderUpdatesRequest(resume_token=token), metadata=as_client("alice")
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert (error.details() or "").startswith("resume_token: ")


async def _write_entries(redis: Any, outbox: Outbox, count: int) -> list[str]:
    """`count` outbox entries as the store writes them (one order's versions), their ids in order."""
    pipe = redis.pipeline(transaction=False)
    for version in range(1, count + 1):
        pipe.xadd(outbox.key, {"order": make_order(version=version).to_json(), "was": "NEW"})
    return [entry_id.decode() for entry_id in await pipe.execute()]


async def test_a_replay_stops_decoding_once_its_stream_overflowed(monkeypatch: pytest.MonkeyPatch) -> None:
    redis = fakeredis.FakeAsyncRedis()
    outbox = Outbox(redis)
    ids = await _write_entries(redis, outbox, 1200)  # more than two replay pages
    decoded: list[bytes | str] = []
    real_decode = outbox_module._decode

    def counting_decode(entry_id: bytes | str, fields: dict[bytes, bytes]) -> Any:
        decoded.append(entry_id)
        return real_decode(entry_id, fields)

    monkeypatch.setattr(outbox_module, "_decode", counting_decode)
    hub = UpdateHub(outbox, max_backlog=3)
    await hub.start(wait_s=2)
    try:
        async with hub.subscribe([], after=ids[0]) as updates:
            first = await anext(updates)
            assert first.entry_id == ids[1]
            # While the reader sits on its first replayed entry, live updates pile up past its backlog.
            live = await _write_entries(redis, outbox, 5)
            await wait_until(lambda: hub.position == live[-1], "the tail to read the live updates")
            replay_decodes_before = len(decoded) - len(live)
            with pytest.raises(SlowSubscriber) as slow:
                await anext(updates)
    finally:
        await hub.stop()
        await redis.aclose()
    assert slow.value.resume_token == ids[1]  # it resumes after what it was given
    replayed = len(decoded) - len(live)
    # One entry decoded for the reader (and at most one read ahead), not a page of 500 or the
    # 1,199 it had to replay: nothing was decoded after the overflow.
    assert replayed <= 2, replayed
    assert replayed == replay_decodes_before


async def test_a_replay_that_keeps_up_gives_every_entry_once_then_live() -> None:
    redis = fakeredis.FakeAsyncRedis()
    outbox = Outbox(redis)
    ids = await _write_entries(redis, outbox, 1100)
    hub = UpdateHub(outbox)
    await hub.start(wait_s=2)
    try:
        async with hub.subscribe([], after=ids[0]) as updates:
            got = [(await anext(updates)).entry_id for _ in ids[1:]]
            live = await _write_entries(redis, outbox, 2)
            got += [(await anext(updates)).entry_id for _ in live]
    finally:
        await hub.stop()
        await redis.aclose()
    assert got == ids[1:] + live
