"""The asyncio consumer of Dramatiq's Redis queues: acks, bounds, retries, dead letters,
delays, shutdown, crash recovery, fairness and idle cost. On fakeredis (its Lua runs
Dramatiq's dispatch script; BLMPOP blocks), plus the doorbell path on the real Redis (its
namespaced db, see tests/redis_dbs.py).

What wakes a consumer is asserted by leaving it no other way (a sweep an hour away), not by how
fast the message ran: the suite runs on a loaded machine, where wall-clock bounds flake.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast
from uuid import uuid4

import fakeredis
import pytest
import redis.asyncio as aioredis
from dramatiq import Message

from order_execution.orders.errors import StoreUnavailable
from order_execution.orders.model import Order
from order_execution.orders.store import OrderStore
from order_execution.tasks.messages import submit_order_push
from order_execution.tasks.queues import (
    DRAMATIQ_NAMESPACE,
    SUBMIT_ORDER,
    messages_key,
    queue_for,
    queue_key,
)
from order_execution.tasks.redis_queues import QueueClient
from order_execution.workers.consumer import Consumer, Handler
from tests import factories
from tests.redis_dbs import redis_db

WORK = "work"
QUEUE = "orders.TESTUSDT"
NO_SWEEP_S = 3600.0  # a sweep this far away cannot be what ran a message: only a doorbell or a timer
HEARTBEATS = f"{DRAMATIQ_NAMESPACE}:__heartbeats__"


# --- helpers -----------------------------------------------------------------------------


def message(n: int, queue: str = QUEUE, actor: str = WORK) -> Message[Any]:
    return Message(queue_name=queue, actor_name=actor, args=(), kwargs={"n": n}, options={})


async def push(redis: aioredis.Redis, *messages: Message[Any], producer: str | None = None) -> None:
    """Queue `messages` as any producer does (stored, listed, doorbell rung); `producer` is the
    worker id it heartbeats under (a fresh one if not given)."""
    await QueueClient(redis, worker_id=producer).settle(enqueues=[(m, None) for m in messages])


def acks_key(worker_id: str, queue: str) -> str:
    return f"{DRAMATIQ_NAMESPACE}:__acks__.{worker_id}.{queue}"


async def unacked(redis: aioredis.Redis, worker_id: str, queue: str = QUEUE) -> int:
    return int(await redis.scard(acks_key(worker_id, queue)))


async def waiting(redis: aioredis.Redis, queue: str = QUEUE) -> int:
    return int(await redis.llen(queue_key(queue)))


async def stored(redis: aioredis.Redis, queue: str = QUEUE) -> int:
    return int(await redis.hlen(messages_key(queue)))


async def stored_messages(redis: aioredis.Redis, queue: str) -> list[Message[Any]]:
    bodies = cast(list[bytes], await redis.hvals(messages_key(queue)))
    return [Message.decode(body) for body in bodies]


async def dead_letters(redis: aioredis.Redis, queue: str = QUEUE) -> list[Message[Any]]:
    """The messages in `queue`'s dead-letter queue (ids in the XQ zset, bodies in XQ.msgs)."""
    xq = f"{DRAMATIQ_NAMESPACE}:{queue}.XQ"
    messages = []
    for message_id in cast(list[bytes], await redis.zrange(xq, 0, -1)):
        body = await redis.hget(f"{xq}.msgs", message_id)
        assert isinstance(body, bytes), "an XQ id without its body"
        messages.append(Message.decode(body))
    return messages


async def eventually(check: Callable[[], object], timeout_s: float = 10.0, what: str = "") -> None:
    """Wait until `check()` (sync or async) is truthy; fail after `timeout_s`, a deadline for a stuck
    test only (generous: a loaded machine is slow, and nothing here is judged by speed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what or check}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(consumer: Consumer, *, grace_s: float = 0.2) -> AsyncIterator[asyncio.Event]:
    """Run `consumer` for the block; stop it (gracefully) on the way out."""
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop, grace_s=grace_s))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=grace_s + 5)


def now_ms() -> int:
    return int(time.time() * 1000)


class Recorder:
    """A handler that records its calls and optionally blocks on `release`."""

    def __init__(self, *, block: bool = False, sleep_s: float = 0.0) -> None:
        self.started: list[int] = []
        self.done: list[int] = []
        self.cancelled: list[int] = []
        self.active = 0
        self.max_active = 0
        self.release = asyncio.Event()
        if not block:
            self.release.set()
        self._sleep_s = sleep_s

    async def __call__(self, n: int) -> None:
        self.started.append(n)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await self.release.wait()
            if self._sleep_s:
                await asyncio.sleep(self._sleep_s)
        except asyncio.CancelledError:
            self.cancelled.append(n)
            raise
        finally:
            self.active -= 1
        self.done.append(n)


@pytest.fixture
async def redis() -> AsyncIterator[fakeredis.FakeAsyncRedis]:
    client = fakeredis.FakeAsyncRedis()
    yield client
    await client.aclose()


# --- the happy path ----------------------------------------------------------------------


async def test_gateway_pushed_message_runs_with_its_kwargs_and_is_acked(redis: aioredis.Redis) -> None:
    order = factories.make_order()
    await OrderStore(redis).enqueue(submit_order_push(order))
    queue = queue_for(order.symbol)
    assert await waiting(redis, queue) == 1
    seen: list[str] = []

    async def submit(order_id: str, queued: str, account: str) -> None:
        assert Order.from_json(queued) == order  # the order as queued rides along
        assert account == order.account  # and so does its account
        seen.append(order_id)

    consumer = Consumer(redis, [queue], {SUBMIT_ORDER: Handler(submit)}, max_in_flight=4, worker_id="w1")
    async with running(consumer):
        await eventually(lambda: seen, what="the handler ran")

        async def settled() -> bool:
            return await stored(redis, queue) == 0 and await unacked(redis, "w1", queue) == 0

        await eventually(settled, what="the message was acked")
    assert seen == [order.order_id]
    assert await waiting(redis, queue) == 0
    assert await dead_letters(redis, queue) == []


async def test_an_idle_consumer_is_woken_by_the_doorbell_not_the_sweep(redis: aioredis.Redis) -> None:
    handler = Recorder()
    consumer = Consumer(
        redis, [QUEUE], {WORK: Handler(handler)}, max_in_flight=2, sweep_interval_s=NO_SWEEP_S, worker_id="w1"
    )
    async with running(consumer):
        await eventually(lambda: redis.zscore(HEARTBEATS, "w1"), what="the first sweep (its heartbeat)")
        await push(redis, message(1))
        await eventually(lambda: handler.done, what="run: only the doorbell can have woken it")
        await eventually(lambda: _is_zero(stored(redis)), what="acked")
    assert handler.done == [1]


async def _is_zero(value: Awaitable[int]) -> bool:
    return await value == 0


@pytest.mark.parametrize("queue_count", [1, 5])
async def test_in_flight_is_bounded_and_everything_completes(redis: aioredis.Redis, queue_count: int) -> None:
    """With five queues a fetch takes one from each (five for three slots): two wait in the backlog."""
    queues = [f"{QUEUE}{i}" for i in range(queue_count)]
    handler = Recorder(block=True)
    await push(redis, *(message(n, queue=queues[n % queue_count]) for n in range(10)))
    consumer = Consumer(redis, queues, {WORK: Handler(handler)}, max_in_flight=3, worker_id="w1")
    async with running(consumer):
        await eventually(lambda: handler.active == 3)
        await asyncio.sleep(0.15)  # many fetch-loop turns: nothing more may start
        assert handler.max_active == 3
        assert consumer.in_flight == 3
        assert len(handler.started) == 3
        handler.release.set()
        await eventually(lambda: len(handler.done) == 10)
        await eventually(lambda: _equals(_total_stored(redis, queues), 0), what="all acked")
    assert handler.max_active == 3
    assert sorted(handler.done) == list(range(10))
    assert sum([await unacked(redis, "w1", q) for q in queues]) == 0


# --- failures ------------------------------------------------------------------------------


async def test_a_retried_failure_waits_on_the_delay_queue_and_runs_again(redis: aioredis.Redis) -> None:
    runs: list[int] = []

    async def flaky(n: int) -> None:
        runs.append(now_ms())
        if len(runs) == 1:
            raise ValueError("transient")

    # A backoff of 1-2 s: the checks below run between the failure and the retry, and a loaded
    # machine may take a few hundred ms over them.
    handler = Handler(
        flaky, lambda retries, exc: isinstance(exc, ValueError), min_backoff_ms=1000, max_backoff_ms=2000
    )
    await push(redis, message(7))
    consumer = Consumer(redis, [QUEUE], {WORK: handler}, max_in_flight=2, worker_id="w1")
    dq = f"{QUEUE}.DQ"
    async with running(consumer):
        await eventually(lambda: runs)
        await eventually(lambda: _is_zero(stored(redis)), what="the failed original acked")
        [retry] = await stored_messages(redis, dq)
        assert retry.options["retries"] == 1
        assert retry.kwargs == {"n": 7}
        assert retry.queue_name == dq
        assert runs[0] + 1000 <= retry.options["eta"] <= now_ms() + 2000  # first backoff: 1-2 s
        assert len(runs) == 1  # not before its eta
        await eventually(lambda: len(runs) == 2, what="the retry ran")
        assert runs[1] >= retry.options["eta"]

        async def all_settled() -> bool:
            return (
                await stored(redis) == 0
                and await stored(redis, dq) == 0
                and await unacked(redis, "w1") == 0
                and await unacked(redis, "w1", dq) == 0
            )

        await eventually(all_settled, what="the retry acked, the delayed copy acked")
        await asyncio.sleep(0.1)
    assert len(runs) == 2
    assert await dead_letters(redis) == []


async def test_a_failure_not_to_retry_is_dead_lettered_once(redis: aioredis.Redis) -> None:
    runs: list[int] = []

    async def broken(n: int) -> None:
        runs.append(n)
        raise ValueError("permanent")

    handler = Handler(broken, lambda retries, exc: False, min_backoff_ms=10, max_backoff_ms=20)
    await push(redis, message(3))
    consumer = Consumer(redis, [QUEUE], {WORK: handler}, max_in_flight=2, worker_id="w1")
    async with running(consumer):
        await eventually(lambda: dead_letters(redis), what="dead-lettered")
        await asyncio.sleep(0.2)  # a retry (10-20 ms backoff) would have run by now
    [dead] = await dead_letters(redis)
    assert dead.kwargs == {"n": 3}
    assert runs == [3]
    assert await stored(redis) == 0
    assert await stored(redis, f"{QUEUE}.DQ") == 0
    assert await unacked(redis, "w1") == 0


async def test_retries_end_in_the_dead_letter_queue_once_exhausted(redis: aioredis.Redis) -> None:
    runs: list[int] = []

    async def broken(n: int) -> None:
        runs.append(n)
        raise ValueError("still failing")

    handler = Handler(broken, lambda retries, exc: retries < 2, min_backoff_ms=10, max_backoff_ms=20)
    await push(redis, message(5))
    consumer = Consumer(redis, [QUEUE], {WORK: handler}, max_in_flight=2, worker_id="w1")
    async with running(consumer):
        await eventually(lambda: dead_letters(redis), what="dead-lettered")
        await asyncio.sleep(0.2)
    [dead] = await dead_letters(redis)
    assert runs == [5, 5, 5]  # the first run and two retries
    assert dead.options["retries"] == 2
    assert await stored(redis) == 0
    assert await stored(redis, f"{QUEUE}.DQ") == 0


async def test_a_message_for_an_unknown_actor_is_dead_lettered(redis: aioredis.Redis) -> None:
    handler = Recorder()
    await push(redis, message(1, actor="no_such_actor"), message(2))
    consumer = Consumer(redis, [QUEUE], {WORK: Handler(handler)}, max_in_flight=2, worker_id="w1")
    async with running(consumer):
        await eventually(lambda: dead_letters(redis), what="dead-lettered")
        await eventually(lambda: handler.done)
    [dead] = await dead_letters(redis)
    assert dead.actor_name == "no_such_actor"
    assert handler.done == [2]
    assert await stored(redis) == 0
    assert await unacked(redis, "w1") == 0


# --- delays ------------------------------------------------------------------------------


async def test_enqueue_with_a_delay_runs_the_message_after_the_delay(redis: aioredis.Redis) -> None:
    ran_at: list[int] = []

    async def work(n: int) -> None:
        ran_at.append(now_ms())

    consumer = Consumer(redis, [QUEUE], {WORK: Handler(work)}, max_in_flight=2, sweep_interval_s=NO_SWEEP_S)
    async with running(consumer):
        await asyncio.sleep(0.05)
        sent = now_ms()
        await consumer.enqueue(message(1), delay_ms=1000)
        await asyncio.sleep(0.25)  # well short of the delay, even on a loaded machine
        assert ran_at == []  # still waiting for its eta
        await eventually(lambda: ran_at, what="run: only its timer can have released it")
    assert ran_at[0] >= sent + 1000
    assert await stored(redis) == 0
    assert await stored(redis, f"{QUEUE}.DQ") == 0


# --- shutdown and crashes ------------------------------------------------------------------


async def test_stop_cancels_blocked_handlers_and_requeues_them_and_the_backlog(
    redis: aioredis.Redis,
) -> None:
    queues = [f"orders.Q{i}" for i in range(4)]
    await push(redis, *(message(10 * q + k, queue=queues[q]) for q in range(4) for k in range(2)))
    stuck = Recorder(block=True)
    first = Consumer(redis, queues, {WORK: Handler(stuck)}, max_in_flight=2, worker_id="first")

    async def fetched_by(worker: str) -> int:
        return sum([await unacked(redis, worker, q) for q in queues])

    stop = asyncio.Event()
    run = asyncio.create_task(first.run(stop, grace_s=0.1))
    await eventually(lambda: stuck.active == 2)
    # One fetch took one message from each queue: two run, two wait in the backlog.
    await eventually(lambda: _equals(fetched_by("first"), 4))
    await asyncio.sleep(0.1)
    assert len(stuck.started) == 2
    stop.set()
    await asyncio.wait_for(run, timeout=2.0)

    assert sorted(stuck.cancelled) == sorted(stuck.started)
    assert stuck.done == []
    assert await fetched_by("first") == 0
    assert sum([await waiting(redis, q) for q in queues]) == 8  # all back, none lost
    assert sum([await stored(redis, q) for q in queues]) == 8

    handler = Recorder()
    second = Consumer(redis, queues, {WORK: Handler(handler)}, max_in_flight=4, worker_id="second")
    async with running(second):
        await eventually(lambda: len(handler.done) == 8)
        await eventually(lambda: _equals(_total_stored(redis, queues), 0), what="all acked")
    assert sorted(handler.done) == sorted(10 * q + k for q in range(4) for k in range(2))


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def _total_stored(redis: aioredis.Redis, queues: list[str]) -> int:
    return sum([await stored(redis, q) for q in queues])


async def test_stop_lets_handlers_finish_within_the_grace_period(redis: aioredis.Redis) -> None:
    handler = Recorder(sleep_s=0.1)
    await push(redis, *(message(n) for n in range(5)))
    consumer = Consumer(redis, [QUEUE], {WORK: Handler(handler)}, max_in_flight=2, worker_id="w1")
    stop = asyncio.Event()
    run = asyncio.create_task(consumer.run(stop, grace_s=2.0))
    await eventually(lambda: len(handler.started) == 2)
    stop.set()
    await asyncio.wait_for(run, timeout=3.0)
    assert len(handler.done) == 2  # finished, not cancelled
    assert handler.cancelled == []
    assert len(handler.started) == 2  # nothing new starts once stopping
    assert await unacked(redis, "w1") == 0
    assert await stored(redis) == 3  # the two finished ones acked
    assert await waiting(redis) == 3


async def test_a_dead_workers_messages_are_recovered_by_anothers_maintenance(
    redis: aioredis.Redis,
) -> None:
    await push(redis, *(message(n) for n in range(5)))
    stuck = Recorder(block=True)
    dead = Consumer(redis, [QUEUE], {WORK: Handler(stuck)}, max_in_flight=3, worker_id="dead")
    before = asyncio.all_tasks()
    stop = asyncio.Event()
    dead_run = asyncio.create_task(dead.run(stop))
    await eventually(lambda: stuck.active == 3)
    await eventually(lambda: _equals(unacked(redis, "dead"), 3))
    await asyncio.sleep(0.05)  # quiescent: handlers blocked, fetcher waiting for a free slot

    # Die: every task of that consumer ends at once; the graceful path never runs.
    spawned = asyncio.all_tasks() - before - {asyncio.current_task()}
    for task in spawned:
        task.cancel()
    _, alive = await asyncio.wait(spawned, timeout=1.0)
    assert not alive, f"tasks survived the kill: {alive}"
    assert dead_run.cancelled()
    assert await unacked(redis, "dead") == 3  # nothing was handed back
    assert await waiting(redis) == 2
    await redis.zadd(HEARTBEATS, {"dead": 0})  # its heartbeat is long stale

    handler = Recorder()
    survivor = Consumer(
        redis,
        [QUEUE],
        {WORK: Handler(handler)},
        max_in_flight=4,
        worker_id="survivor",
        sweep_interval_s=0.1,
        maintenance_every=1,
    )
    async with running(survivor):
        await eventually(lambda: len(handler.done) == 5, what="all five processed")
        await eventually(lambda: _is_zero(stored(redis)), what="all acked")
    assert sorted(handler.done) == list(range(5))
    assert await unacked(redis, "dead") == 0
    assert await redis.zscore(HEARTBEATS, "dead") is None  # forgotten once its acks are gone


# --- fairness and idle cost ----------------------------------------------------------------


async def test_a_quiet_queue_is_served_while_a_busy_one_drains(redis: aioredis.Redis) -> None:
    busy, quiet = "orders.BUSY", "orders.QUIET"
    events: list[str] = []

    async def work(n: int) -> None:
        if n < 0:
            events.append("quiet started")
            return
        await asyncio.sleep(0.01)
        events.append("busy done")

    await push(redis, *(message(n, queue=busy) for n in range(50)))
    consumer = Consumer(redis, [busy, quiet], {WORK: Handler(work)}, max_in_flight=2)
    async with running(consumer):
        await eventually(lambda: "busy done" in events)
        await push(redis, message(-1, queue=quiet))
        await eventually(lambda: "quiet started" in events, timeout_s=2.0)
        started_after = events.index("quiet started")
        assert started_after < 10, f"the quiet queue waited for {started_after} busy messages"
        await eventually(lambda: events.count("busy done") == 50, timeout_s=5.0)
    assert await stored(redis, busy) == 0
    assert await stored(redis, quiet) == 0


class CallCounter:
    """Counts round trips to `redis`: single commands and whole pipelines."""

    def __init__(self, redis: Any) -> None:
        self.calls: list[str] = []
        self._execute_command = redis.execute_command
        self._pipeline = redis.pipeline
        redis.execute_command = self._command
        redis.pipeline = self._counted_pipeline

    async def _command(self, *args: Any, **options: Any) -> Any:
        self.calls.append(str(args[0]))
        return await self._execute_command(*args, **options)

    def _counted_pipeline(self, *args: Any, **kwargs: Any) -> Any:
        pipe = self._pipeline(*args, **kwargs)
        execute = pipe.execute

        async def counted(*a: Any, **k: Any) -> Any:
            self.calls.append(f"pipeline of {len(pipe.command_stack)}")
            return await execute(*a, **k)

        pipe.execute = counted
        return pipe


async def test_an_idle_consumer_of_twenty_queues_makes_few_redis_calls(redis: aioredis.Redis) -> None:
    counter = CallCounter(redis)
    queues = [f"orders.IDLE{i}" for i in range(20)]
    consumer = Consumer(redis, queues, {}, max_in_flight=8, sweep_interval_s=1.0, worker_id="idle")
    async with running(consumer):
        await eventually(lambda: redis.zscore(HEARTBEATS, "idle"), what="the first sweep")
        first_heartbeat = await redis.zscore(HEARTBEATS, "idle")
        counter.calls.clear()
        await asyncio.sleep(2.0)
        calls = list(counter.calls)
        heartbeat = await redis.zscore(HEARTBEATS, "idle")
    # Two sweeps (a pipeline and a BLMPOP each) normally; a loaded machine only makes fewer.
    assert len(calls) <= 10, f"{len(calls)} calls in 2 s: {calls}"
    assert any(c.startswith("pipeline") for c in calls), "no sweep in 2 s"
    assert first_heartbeat is not None and heartbeat is not None
    assert heartbeat > first_heartbeat  # kept fresh while idle


# --- the real Redis ------------------------------------------------------------------------


@pytest.fixture
async def real(real_redis: str) -> AsyncIterator[tuple[aioredis.Redis, str]]:
    """The real Redis (a db shared by namespaced modules) and a unique queue prefix; every key
    under it is removed after, and nothing else is touched."""
    client = aioredis.Redis.from_url(f"redis://{real_redis}/{redis_db(__name__)}")
    prefix = f"consumer-test-{uuid4().hex[:8]}"
    yield client, prefix
    async for key in client.scan_iter(match=f"{DRAMATIQ_NAMESPACE}:*{prefix}*"):
        await client.delete(key)
    for worker in cast(list[bytes], await client.zrange(HEARTBEATS, 0, -1)):
        if prefix in worker.decode():
            await client.zrem(HEARTBEATS, worker)
    await client.aclose()


@pytest.mark.integration
async def test_real_redis_doorbell_wake_retry_delay_and_ack(real: tuple[aioredis.Redis, str]) -> None:
    client, prefix = real
    queues = [f"{prefix}.{i}" for i in range(3)]
    worker = f"{prefix}-worker"
    runs: list[tuple[int, int]] = []

    async def flaky(n: int) -> None:
        runs.append((n, now_ms()))
        if len(runs) == 1:
            raise ValueError("transient")

    handler = Handler(flaky, lambda retries, exc: retries < 1, min_backoff_ms=100, max_backoff_ms=200)
    consumer = Consumer(
        client, queues, {WORK: handler}, max_in_flight=4, sweep_interval_s=NO_SWEEP_S, worker_id=worker
    )
    async with running(consumer):
        # Past the first sweep (it writes the heartbeat with its fetch): idle, blocked on the doorbells.
        await eventually(lambda: client.zscore(HEARTBEATS, worker), what="the first sweep")
        await push(client, message(1, queue=queues[2]), producer=f"{prefix}-producer")
        # With no sweep for an hour, only the doorbells and the eta timer can have run it twice.
        await eventually(lambda: len(runs) == 2, what="ran, failed, ran again")

        async def settled() -> bool:
            return (
                await stored(client, queues[2]) == 0
                and await stored(client, f"{queues[2]}.DQ") == 0
                and await unacked(client, worker, queues[2]) == 0
                and await unacked(client, worker, f"{queues[2]}.DQ") == 0
            )

        await eventually(settled, what="acked")
    assert runs[1][1] - runs[0][1] >= 100  # after its backoff
    assert await dead_letters(client, queues[2]) == []


# --- acks ride the fetches -------------------------------------------------------------------


def doorbell_only(
    redis: aioredis.Redis, run: Callable[..., Awaitable[None]], *, ack_delay_s: float
) -> Consumer:
    """A consumer of QUEUE as worker w1 that only a doorbell wakes (no sweep for an hour); with
    `ack_delay_s=NO_SWEEP_S` only a fetch can carry its acks."""
    return Consumer(
        redis,
        [QUEUE],
        {WORK: Handler(run)},
        max_in_flight=2,
        sweep_interval_s=NO_SWEEP_S,
        ack_delay_s=ack_delay_s,
        worker_id="w1",
    )


async def test_an_ack_rides_the_next_fetch_not_a_round_trip_of_its_own(redis: aioredis.Redis) -> None:
    handler = Recorder()
    consumer = doorbell_only(redis, handler, ack_delay_s=NO_SWEEP_S)
    async with running(consumer):
        await eventually(lambda: redis.zscore(HEARTBEATS, "w1"), what="the first sweep")
        await push(redis, message(1))
        await eventually(lambda: handler.done == [1], what="the first message ran")
        await asyncio.sleep(0.2)
        assert await unacked(redis, "w1") == 1, "acked on its own, not by the next fetch"
        await push(redis, message(2))
        await eventually(lambda: handler.done == [1, 2], what="the second message ran")
        # The first message's ack went out with the fetch that took the second.
        await eventually(lambda: _is_one(stored(redis)), what="the first message acked")
        assert await unacked(redis, "w1") == 1  # the second one's ack waits for the next fetch
    assert await stored(redis) == 0  # stopping sends what no fetch took


async def _is_one(value: Awaitable[int]) -> bool:
    return await value == 1


async def test_a_quiet_consumer_acks_on_its_own_after_the_ack_delay(redis: aioredis.Redis) -> None:
    handler = Recorder()
    consumer = doorbell_only(redis, handler, ack_delay_s=0.05)
    async with running(consumer):
        await eventually(lambda: redis.zscore(HEARTBEATS, "w1"), what="the first sweep")
        await push(redis, message(1))
        await eventually(lambda: handler.done == [1], what="ran")
        # No fetch follows (no message, no sweep): the settler sends the ack itself.
        await eventually(lambda: _is_zero(stored(redis)), what="acked with no fetch to carry it")
        assert await unacked(redis, "w1") == 0


async def test_a_dead_letter_goes_out_at_once_not_with_the_next_fetch(redis: aioredis.Redis) -> None:
    async def broken(n: int) -> None:
        raise ValueError("bad message")

    consumer = doorbell_only(redis, broken, ack_delay_s=NO_SWEEP_S)
    async with running(consumer):
        await eventually(lambda: redis.zscore(HEARTBEATS, "w1"), what="the first sweep")
        await push(redis, message(1))
        await eventually(lambda: dead_letters(redis), what="dead-lettered with no fetch after it")


async def test_acks_a_failed_fetch_carried_are_sent_again(redis: aioredis.Redis) -> None:
    handler = Recorder()
    consumer = doorbell_only(redis, handler, ack_delay_s=0.05)
    client = consumer._client
    real_fetch = client.fetch
    failed: list[list[tuple[str, str]]] = []

    async def fetch_failing_once(*args: Any, **kwargs: Any) -> Any:
        acks = kwargs.get("acks") or []
        if acks and not failed:
            failed.append(list(acks))
            raise StoreUnavailable("Redis went away mid-fetch")
        return await real_fetch(*args, **kwargs)

    client.fetch = fetch_failing_once  # type: ignore[method-assign]
    async with running(consumer):
        await eventually(lambda: redis.zscore(HEARTBEATS, "w1"), what="the first sweep")
        await push(redis, message(1))
        await eventually(lambda: handler.done == [1], what="the first message ran")
        await push(redis, message(2))  # its fetch carries the first one's ack, and fails
        await eventually(lambda: handler.done == [1, 2], what="the second message ran after the retry")
        await eventually(lambda: _is_zero(stored(redis)), what="both acked, the failed fetch's too")
    assert failed, "no fetch carried an ack"
