"""The worker's consumer woken by a doorbell, and the event bus, on the real Redis and NATS."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import nats
import pytest
import redis.asyncio as aioredis

from orders.events import EventBus, decode_update
from orders.store import OrderStore
from tasks.messages import submit_order_push
from tasks.queues import SUBMIT_ORDER, doorbell_key, queue_for
from tests.factories import make_order
from workers.consumer import Consumer, Handler

pytestmark = pytest.mark.integration

BROKER_DB = 12


async def test_idle_consumer_is_woken_by_the_doorbell(real_redis: str) -> None:
    """A message enqueued while the consumer is idle runs within 100 ms, not at the next sweep.

    The consumer sweeps its queues at start and then every 6 s. The message is enqueued
    2.5 s after start, as the gateway does (the store's script, which rings the queue's
    doorbell); without the doorbell it would wait ~3.5 s for the next sweep.
    """
    client = aioredis.Redis.from_url(f"redis://{real_redis}/{BROKER_DB}")
    await client.flushdb()
    queue = queue_for("TESTUSDT")
    started: list[float] = []
    ran = asyncio.Event()

    async def submit(order_id: str, queued: str) -> None:
        started.append(time.monotonic())
        ran.set()

    consumer = Consumer(
        client, [queue], {SUBMIT_ORDER: Handler(run=submit)}, max_in_flight=4, sweep_interval_s=6.0
    )
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop, grace_s=1.0))
    try:
        await asyncio.sleep(2.5)  # the start sweep found nothing; the next one is 3.5 s away
        assert not running.done()
        sent = time.monotonic()
        await OrderStore(client).enqueue(submit_order_push(make_order(symbol="TESTUSDT")))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ran.wait(), timeout=3.0)
        assert started, "the idle consumer was not woken by the enqueue"
        assert started[0] - sent < 0.1, f"ran {started[0] - sent:.3f} s after the enqueue"
        assert await client.llen(doorbell_key(queue)) == 0  # the ring was taken
    finally:
        stop.set()
        await running
        await client.flushdb()
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
