"""Acknowledged means replicated (`redis.min_replica_acks`), on fakeredis with WAIT answered by a fake.

fakeredis does not know WAIT (it answers "unknown command"), so `ReplicatingRedis` answers it
with a chosen replica count and records every pipeline it sends: the tests check that WAIT goes
in the same pipeline as the write (one round trip), only when acks are required, and what a
short count does to the store, the gateway, the workers' store calls and the outbox readers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import fakeredis
import grpc
import pytest
from redis.asyncio.client import Pipeline

from order_execution.exchange.user_stream import parse_order_event
from order_execution.gateway.updates import UpdateHub
from order_execution.listener.events import EventBus, Message
from order_execution.listener.order_events import OrderEventRecorder
from order_execution.listener.relay import OutboxRelay
from order_execution.orders import fsm
from order_execution.orders.errors import NotReplicated
from order_execution.orders.model import OrderState
from order_execution.orders.replicas import ReplicaAcks
from order_execution.orders.store import OrderStore, TransitionResult
from order_execution.proto import order_pb2 as pb
from order_execution.tasks.messages import submit_order_push
from tests import factories
from tests.unit.gateway_harness import limit_order, running_gateway
from tests.unit.test_user_stream import order_trade_update

S = OrderState
ONE_REPLICA = ReplicaAcks(needed=1, timeout_ms=50)


class ReplicatingRedis(fakeredis.FakeAsyncRedis):
    """fakeredis whose pipelines answer WAIT with `replicas` (popped from `answers` first, if any)
    and record their commands in `pipelines`, one list per round trip."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.replicas = 1
        self.answers: list[int] = []
        self.pipelines: list[list[str]] = []

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        return _WaitPipeline(self, transaction)

    def waits(self) -> list[list[str]]:
        """The pipelines that carried a WAIT."""
        return [p for p in self.pipelines if "WAIT" in p]


class _WaitPipeline(Pipeline):
    def __init__(self, owner: ReplicatingRedis, transaction: bool) -> None:
        super().__init__(owner.connection_pool, owner.response_callbacks, transaction, None)
        self._owner = owner
        self._sent: list[str] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        name = str(args[0]).upper()
        self._sent.append(name)
        if name == "WAIT":
            return self
        return super().execute_command(*args, **options)

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        sent, self._sent = self._sent, []
        self._owner.pipelines.append(sent)
        replies = iter(
            await super().execute(raise_on_error=raise_on_error) if len(sent) > sent.count("WAIT") else []
        )
        owner = self._owner
        return [
            (owner.answers.pop(0) if owner.answers else owner.replicas) if name == "WAIT" else next(replies)
            for name in sent
        ]


@pytest.fixture
async def redis() -> AsyncIterator[ReplicatingRedis]:
    client = ReplicatingRedis()
    yield client
    await client.aclose()


async def test_no_replica_acks_sends_no_wait(redis: ReplicatingRedis) -> None:
    store = OrderStore(redis)
    created = await store.create(factories.make_order(), enqueue=submit_order_push)
    await store.transition(created.order.order_id, lambda o: fsm.transition(o, S.SUBMITTING))
    await store.transition(created.order.order_id, lambda o: None)
    await store.create(created.order)  # a repeated client id
    await store.enqueue(submit_order_push(created.order))
    assert redis.waits() == []
    assert store.replica_probe("reader") is None


async def test_each_write_carries_wait_in_its_own_pipeline(redis: ReplicatingRedis) -> None:
    store = OrderStore(redis, replica_acks=ONE_REPLICA)

    async def three_writes(order_id: str) -> None:
        created = await store.create(factories.make_order(order_id=order_id, client_order_id=order_id))
        await store.transition(order_id, lambda o: fsm.transition(o, S.SUBMITTING))
        await store.enqueue(submit_order_push(created.order))

    await three_writes("o1")  # the first use of each script loads it (NOSCRIPT) and sends again
    before = len(redis.pipelines)
    await three_writes("o2")
    # One round trip each: the script, then WAIT right after it.
    assert redis.pipelines[before:] == [["EVALSHA", "WAIT"]] * 3
    assert all(p == ["EVALSHA", "WAIT"] for p in redis.pipelines)


async def test_a_short_count_refuses_the_create_naming_the_client_id_and_the_retry_returns_it(
    redis: ReplicatingRedis,
) -> None:
    store = OrderStore(redis, replica_acks=ONE_REPLICA)
    order = factories.make_order(client_order_id="desk-7")
    redis.replicas = 0
    with pytest.raises(NotReplicated) as refused:
        await store.create(order)
    assert (refused.value.acks, refused.value.needed, refused.value.timeout_ms) == (0, 1, 50)
    assert "client_order_id 'desk-7'" in str(refused.value)
    assert "confirmed by 0 of 1 replicas within 50 ms" in str(refused.value)
    assert (await store.get(order.order_id)).version == 1  # on the primary all the same

    redis.replicas = 1
    before = len(redis.pipelines)
    retry = await store.create(factories.make_order(order_id="o2", client_order_id="desk-7"))
    assert not retry.created and retry.order.order_id == order.order_id
    # The retry wrote nothing itself, so it confirmed with a probe write and WAIT, in one round trip.
    assert ["SET", "WAIT"] in redis.pipelines[before:]


async def test_a_short_count_on_a_retry_is_refused_too(redis: ReplicatingRedis) -> None:
    store = OrderStore(redis, replica_acks=ONE_REPLICA)
    order = factories.make_order()
    redis.replicas = 0
    with pytest.raises(NotReplicated):
        await store.create(order)
    with pytest.raises(NotReplicated):
        await store.create(order)


async def test_a_short_transition_carries_its_result_until_the_replicas_hold_it(
    redis: ReplicatingRedis,
) -> None:
    store = OrderStore(redis, replica_acks=ONE_REPLICA)
    order = (await store.create(factories.make_order())).order
    redis.answers = [0, 0, 0]  # the write's WAIT, then two probes, come short; the third probe holds
    with pytest.raises(NotReplicated) as refused:
        await store.transition(order.order_id, lambda o: fsm.transition(o, S.SUBMITTING))
    outcome = await store.until_replicated(refused.value, budget_ms=5_000)
    assert isinstance(outcome, TransitionResult) and outcome.order.state is S.SUBMITTING
    assert redis.answers == []  # it probed until a replica confirmed

    redis.replicas = 0
    with pytest.raises(NotReplicated):
        await store.until_replicated(refused.value, budget_ms=0)


async def test_the_listener_moves_past_old_news_only_once_the_replicas_hold_what_it_found(
    redis: ReplicatingRedis,
) -> None:
    """An event the stored order already reflects is answered without a write; like a transition that
    changes nothing, it confirms with probes until a replica holds what it found."""
    store = OrderStore(redis, replica_acks=ONE_REPLICA)
    await store.create(factories.make_order())
    await store.transition("o1", lambda o: fsm.transition(o, S.SUBMITTING))
    await store.transition(
        "o1", lambda o: fsm.apply_report(o, fsm.ExchangeReport(S.SUBMITTED, exchange_order_id="99"))
    )
    recorder = OrderEventRecorder(store)
    redis.answers = [0, 0]  # the first two probes come short; the third holds
    before = len(redis.waits())
    await recorder.record(parse_order_event(order_trade_update("NEW", "NEW")))
    assert recorder.reflected == 1 and redis.answers == []
    assert len(redis.waits()) - before == 3  # probes only: no write


async def test_the_gateway_answers_unavailable_naming_the_client_id_then_the_retry_succeeds(
    redis: ReplicatingRedis,
) -> None:
    request = limit_order(client_order_id="retry-me")
    async with running_gateway(redis, redis, replica_acks=ONE_REPLICA) as stub:
        redis.replicas = 0
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CreateOrder(request)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "retry with client_order_id 'retry-me'" in (refused.value.details() or "")
        assert "confirmed by 0 of 1 replicas" in (refused.value.details() or "")

        redis.replicas = 1
        first = await stub.CreateOrder(request)
        again = await stub.CreateOrder(request)
        assert first.order_id == again.order_id
        assert len(await redis.keys("oe:order:*")) == 1  # one order for the client id, never two

        redis.replicas = 0
        with pytest.raises(grpc.aio.AioRpcError) as cancel_refused:
            await stub.CancelOrder(pb.CancelOrderRequest(order_id=first.order_id))
        assert cancel_refused.value.code() is grpc.StatusCode.UNAVAILABLE
        assert first.order_id in (cancel_refused.value.details() or "")


async def _collect(updates: AsyncIterator[Any], into: list[Any]) -> None:
    async for entry in updates:
        into.append(entry)


async def _settled(got: list[Any], count: int) -> None:
    """Wait (up to 5 s: WAIT's fake answers come at once) for `count` entries, then a little more
    for any extra one."""
    for _ in range(100):
        if len(got) >= count:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)


async def test_the_stream_tail_holds_a_batch_until_a_replica_has_it_then_passes_it_on_in_order(
    redis: ReplicatingRedis,
) -> None:
    writer = OrderStore(redis)  # the writes themselves are not the point here
    probe = OrderStore(redis, replica_acks=ONE_REPLICA).replica_probe("gateway-tail")
    hub = UpdateHub(writer.outbox, replicas=probe)
    await hub.start(wait_s=1.0)
    got: list[Any] = []
    try:
        async with hub.subscribe(()) as updates:
            reader = asyncio.create_task(_collect(updates, got))
            redis.replicas = 0
            order = (await writer.create(factories.make_order())).order
            await writer.transition(order.order_id, lambda o: fsm.transition(o, S.SUBMITTING))
            await writer.transition(order.order_id, lambda o: fsm.transition(o, S.SUBMITTED))
            await asyncio.sleep(0.5)
            assert got == []  # held: no replica confirmed the batch
            held_at = hub.position
            redis.replicas = 1
            await _settled(got, 3)
            reader.cancel()
        assert [(e.order.version, e.order.state) for e in got] == [
            (1, S.NEW),
            (2, S.SUBMITTING),
            (3, S.SUBMITTED),
        ]  # in order, each once
        assert hub.position != held_at
    finally:
        await hub.stop()


async def test_a_replay_stops_at_what_the_replicas_confirmed(redis: ReplicatingRedis) -> None:
    writer = OrderStore(redis)
    await writer.create(factories.make_order(order_id="o1", client_order_id="c1"))
    after = await writer.outbox.last_id()
    hub = UpdateHub(writer.outbox, replicas=OrderStore(redis, replica_acks=ONE_REPLICA).replica_probe("tail"))
    await hub.start(wait_s=1.0)
    got: list[Any] = []
    try:
        redis.replicas = 0
        await writer.create(factories.make_order(order_id="o2", client_order_id="c2"))
        async with hub.subscribe((), after=after) as updates:
            reader = asyncio.create_task(_collect(updates, got))
            await asyncio.sleep(0.5)
            assert got == []  # written after the tail's confirmed position: not replayed
            redis.replicas = 1
            await _settled(got, 1)
            reader.cancel()
        assert [e.order.order_id for e in got] == ["o2"]
    finally:
        await hub.stop()


class _Bus:
    """The relay's NATS side: records what it was asked to publish."""

    connected = True
    server = "fake"

    def __init__(self) -> None:
        self.published: list[tuple[str, int]] = []

    async def publish_batch(self, messages: Sequence[Message]) -> list[Exception | None]:
        for message in messages:
            order_id, version = message.msg_id.split(":")
            self.published.append((order_id, int(version)))
        return [None] * len(messages)

    async def close(self) -> None:
        return None


async def test_the_relay_publishes_only_what_a_replica_has_each_once_in_order(
    redis: ReplicatingRedis,
) -> None:
    writer = OrderStore(redis)
    bus = _Bus()

    async def connect() -> EventBus:
        return cast(EventBus, bus)

    relay = OutboxRelay(
        writer.outbox,
        connect,
        consumer="relay-1",
        block_ms=50,
        replicas=OrderStore(redis, replica_acks=ONE_REPLICA).replica_probe("nats-relay"),
    )
    task = asyncio.create_task(relay.run())
    try:
        redis.replicas = 0
        order = (await writer.create(factories.make_order())).order
        await writer.transition(order.order_id, lambda o: fsm.transition(o, S.CANCELED))
        await asyncio.sleep(0.6)
        assert bus.published == []
        redis.replicas = 1
        for _ in range(100):
            if len(bus.published) >= 2:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        assert bus.published == [(order.order_id, 1), (order.order_id, 2)]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
