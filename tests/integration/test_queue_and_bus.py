"""The doorbell broker and the event bus on the real Redis and NATS."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import dramatiq
import nats
import pytest
import redis
from dramatiq import Worker

from orders.events import EventBus, decode_update
from tasks.broker import build_broker
from tasks.queues import doorbell_key
from tests.factories import make_order

pytestmark = pytest.mark.integration

BROKER_DB = 12


def test_idle_consumer_is_woken_by_the_doorbell(real_redis: str) -> None:
    """An idle polling consumer would sleep on for >= 1.3 s; the doorbell wakes it at once.

    After 2.5 s idle with worker_timeout 6 s the stock consumer is in a 2.5-5 s backoff
    sleep that began before 2.5 s, so it could not run the message within 1 s.
    """
    url = f"redis://{real_redis}/{BROKER_DB}"
    redis.Redis.from_url(url).flushdb()
    broker = build_broker(url)
    ran = threading.Event()

    def probe() -> None:
        ran.set()

    actor: Any = dramatiq.actor(actor_name="probe", broker=broker, queue_name="orders.TESTUSDT")(probe)
    worker = Worker(broker, worker_threads=1, worker_timeout=6_000)
    worker.start()
    try:
        time.sleep(2.5)  # long enough for the consumer's backoff to grow to seconds
        sent = time.monotonic()
        actor.send()
        assert ran.wait(timeout=1.0), "the idle consumer was not woken by the enqueue"
        assert time.monotonic() - sent < 1.0
        assert redis.Redis.from_url(url).llen(doorbell_key("orders.TESTUSDT")) == 0  # the ring was consumed
    finally:
        worker.stop()
        broker.close()
        redis.Redis.from_url(url).flushdb()


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
