"""The doorbell is one contract for every producer: the store's scripts (an order's message,
queued with it) and the workers' queue client (retries, requeues) ring the same list, under
the same cap, and a worker takes every entry at once."""

from __future__ import annotations

from typing import Any

import fakeredis
from dramatiq import Message

from order_execution.cli.dashboard import dashboard_broker
from order_execution.orders.store import OrderStore
from order_execution.orders.store_scripts import DOORBELL_CAP
from order_execution.runtime.settings import Settings
from order_execution.tasks.messages import cancel_all_push
from order_execution.tasks.queues import doorbell_key, messages_key, queue_for, queue_key
from order_execution.tasks.redis_queues import QueueClient

QUEUE = queue_for("BTCUSDT")
BELL = doorbell_key(QUEUE)
PUSHES = DOORBELL_CAP + 4


def _message(n: int) -> Message[Any]:
    return Message(queue_name=QUEUE, actor_name="work", args=(), kwargs={"n": n}, options={})


async def test_the_store_rings_once_per_push_up_to_the_cap(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    store = OrderStore(fake_redis)
    await store.enqueue(cancel_all_push("BTCUSDT"))
    assert await fake_redis.llen(BELL) == 1
    for _ in range(PUSHES - 1):
        await store.enqueue(cancel_all_push("BTCUSDT"))
    assert await fake_redis.llen(BELL) == DOORBELL_CAP
    assert await fake_redis.llen(queue_key(QUEUE)) == PUSHES  # the cap bounds the bell, not the queue


async def test_the_queue_client_rings_the_same_bell_under_the_same_cap(
    fake_redis: fakeredis.FakeAsyncRedis,
) -> None:
    client = QueueClient(fake_redis)
    await client.fetch([(QUEUE, 0)])  # loads Dramatiq's script (a NOSCRIPT retry rings twice)
    await client.settle(enqueues=[(_message(1), None)])
    assert await fake_redis.llen(BELL) == 1
    await client.settle(enqueues=[(_message(n), None) for n in range(PUSHES)])
    assert await fake_redis.llen(BELL) == DOORBELL_CAP
    assert await fake_redis.hlen(messages_key(QUEUE)) == PUSHES + 1  # Dramatiq's layout
    assert await fake_redis.llen(queue_key(QUEUE)) == PUSHES + 1


async def test_a_requeue_rings_and_a_worker_takes_every_entry_at_once(
    fake_redis: fakeredis.FakeAsyncRedis,
) -> None:
    store = OrderStore(fake_redis)
    for _ in range(PUSHES):
        await store.enqueue(cancel_all_push("BTCUSDT"))
    worker = QueueClient(fake_redis)
    assert await worker.wait_for_bell([BELL], timeout_s=1) == BELL
    assert await fake_redis.llen(BELL) == 0
    [(_, [payload])], _ = await worker.fetch([(QUEUE, 1)])
    requeued = Message.decode(payload).options["redis_message_id"]
    await worker.settle(requeues=[(QUEUE, requeued)])
    assert await fake_redis.llen(BELL) == 1


def test_a_message_the_dashboard_requeues_rings_its_queues_bell() -> None:
    """Dramatiq's own broker (the dashboard's requeue) rings with the same script and cap."""
    client = fakeredis.FakeRedis()
    broker = dashboard_broker(Settings(symbols=["BTCUSDT"]), client=client)
    for n in range(PUSHES):
        broker.enqueue(_message(n))
    assert client.llen(BELL) == DOORBELL_CAP
    assert client.llen(queue_key(QUEUE)) == PUSHES
    broker.close()
