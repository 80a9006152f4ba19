"""The worker's consumer woken by a doorbell, and the event bus, on the real Redis and NATS."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import nats
import pytest
import redis.asyncio as aioredis
from nats.js.errors import NoStreamResponseError

from order_execution.listener.events import EventBus, Message, decode_update
from order_execution.orders.store import OrderStore
from order_execution.tasks.messages import submit_order_push
from order_execution.tasks.queues import DRAMATIQ_NAMESPACE, SUBMIT_ORDER, doorbell_key, queue_for
from order_execution.workers.consumer import Consumer, Handler
from tests.factories import make_order
from tests.redis_dbs import delete_keys_under, redis_db

pytestmark = pytest.mark.integration

HEARTBEATS = f"{DRAMATIQ_NAMESPACE}:__heartbeats__"  # Dramatiq's set of worker heartbeats
NO_SWEEP_S = 3600.0  # a sweep this far away cannot be what ran the message: only the doorbell


async def test_idle_consumer_is_woken_by_the_doorbell(real_redis: str) -> None:
    """A message enqueued while the consumer is idle runs at once, not at the next sweep.

    The consumer sweeps its queue at start and then every hour; the message is enqueued after
    the start sweep (its heartbeat is written with that fetch), as the gateway does (the store's
    script, which rings the queue's doorbell). So it can only run because the doorbell woke the
    consumer: asserted by its running at all, not by a wall-clock bound that a loaded machine
    would break.

    The database is shared by namespaced modules (tests/redis_dbs.py): the queue is named for a
    fresh symbol and the worker id carries it, and only their keys are deleted afterwards.
    """
    client = aioredis.Redis.from_url(f"redis://{real_redis}/{redis_db(__name__)}")
    symbol = f"T{uuid.uuid4().hex[:12].upper()}USDT"
    queue, worker = queue_for(symbol), f"doorbell-test-{symbol}"
    ran = asyncio.Event()

    async def submit(order_id: str, queued: str, account: str) -> None:
        ran.set()

    consumer = Consumer(
        client,
        [queue],
        {SUBMIT_ORDER: Handler(run=submit)},
        max_in_flight=4,
        sweep_interval_s=NO_SWEEP_S,
        worker_id=worker,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop, grace_s=1.0))
    try:
        async with asyncio.timeout(10):  # a deadline for a stuck test only; the start sweep is quick
            while await client.zscore(HEARTBEATS, worker) is None:
                await asyncio.sleep(0.01)
        assert not running.done()
        await OrderStore(client).enqueue(submit_order_push(make_order(symbol=symbol)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ran.wait(), timeout=10.0)  # generous: judged by running at all
        assert ran.is_set(), "the idle consumer was not woken by the enqueue"
        assert await client.llen(doorbell_key(queue)) == 0  # the ring was taken
    finally:
        stop.set()
        await running
        await delete_keys_under(client, f"{DRAMATIQ_NAMESPACE}:{queue}")
        async for key in client.scan_iter(match=f"{DRAMATIQ_NAMESPACE}:*{worker}*"):
            await client.delete(key)
        await client.zrem(HEARTBEATS, worker)
        await client.aclose()


async def test_republishing_the_same_version_is_deduplicated(real_nats: str) -> None:
    bus = await EventBus.connect(real_nats)
    order = make_order(order_id=f"dedup-{uuid.uuid4().hex}", symbol="DEDUPUSDT", version=3)
    received: list[bytes] = []
    nc = await nats.connect(real_nats)
    js = nc.jetstream()
    await bus.publish_update(order)
    await bus.publish_update(order)  # e.g. a retry after a lost ack
    await bus.publish_update(order.replace(version=4))
    sub = await js.subscribe("orders.updates.DEDUPUSDT", ordered_consumer=True)
    deadline = asyncio.get_running_loop().time() + 3
    while asyncio.get_running_loop().time() < deadline:
        try:
            msg = await sub.next_msg(timeout=0.5)
        except nats.errors.TimeoutError:
            break
        if decode_update(msg.data).order_id == order.order_id:
            received.append(msg.data)
    await nc.close()
    await bus.close()
    versions = [decode_update(data).version for data in received]
    assert versions == [3, 4]


async def test_a_batch_is_acked_per_message_repeats_included_and_a_subject_without_stream_refused(
    real_nats: str,
) -> None:
    bus = await EventBus.connect(real_nats)
    run = uuid.uuid4().hex
    subject = f"orders.updates.BATCH{run[:8].upper()}"
    batch = [Message(subject, b'{"n":%d}' % n, f"batch-{run}:{n}") for n in range(20)]
    nowhere = Message(f"oe-test.no-stream.{run}", b"{}", f"nowhere-{run}:1")
    nc = await nats.connect(real_nats)
    try:
        assert await bus.publish_batch(batch[:10]) == [None] * 10
        # The first ten again (a retry after lost acks) with the rest: every one acked, stored once.
        outcomes = await bus.publish_batch([*batch, nowhere])
        assert outcomes[:20] == [None] * 20
        assert isinstance(outcomes[20], NoStreamResponseError)
        sub = await nc.jetstream().subscribe(subject, ordered_consumer=True)
        stored: list[str] = []
        with contextlib.suppress(nats.errors.TimeoutError):
            while True:
                msg = await sub.next_msg(timeout=0.5)
                stored.append((msg.headers or {}).get("Nats-Msg-Id", ""))
    finally:
        await nc.close()
        await bus.close()
    assert stored == [m.msg_id for m in batch]
