"""A worker serves several exchange accounts: each account's queues have their own slots, so an
account whose orders all wait (its ORDERS budget spent) never holds back another account's.

On fakeredis, with the helpers of tests/unit/test_consumer.py. The sweep is an hour away, so only
a doorbell or a freed slot can start a message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import fakeredis

from order_execution.tasks.queues import account_of, queue_for
from order_execution.workers.consumer import Consumer, Handler, one_group
from tests.unit.test_consumer import NO_SWEEP_S, WORK, Recorder, eventually, message, push, running, waiting

A_QUEUE = queue_for("BTCUSDT", "acct-a")
B_QUEUE = queue_for("BTCUSDT", "acct-b")


def two_account_consumer(
    redis: fakeredis.FakeAsyncRedis, handler: ByAccount, group_of: Callable[[str], str]
) -> Consumer:
    """A consumer of A's and B's queues with two slots per group (`group_of`)."""
    return Consumer(
        redis,
        [A_QUEUE, B_QUEUE],
        {WORK: Handler(handler)},
        max_in_flight=2,
        sweep_interval_s=NO_SWEEP_S,
        worker_id="w1",
        group_of=group_of,
    )


class ByAccount:
    """Handlers that block account A's messages (n < 1000) and run B's (n >= 1000) at once."""

    def __init__(self) -> None:
        self.a = Recorder(block=True)
        self.b = Recorder()

    async def __call__(self, n: int) -> None:
        await (self.a if n < 1000 else self.b)(n)


def test_queues_name_their_account() -> None:
    assert account_of(A_QUEUE) == "acct-a"
    assert account_of(A_QUEUE + ".DQ") == "acct-a"
    assert account_of(queue_for("BTCUSDT")) == "default"
    assert queue_for("BTCUSDT") == "orders.BTCUSDT"  # a single-account deployment's queue, unchanged


async def test_a_full_account_does_not_hold_back_another_accounts_message() -> None:
    redis = fakeredis.FakeAsyncRedis()
    handler = ByAccount()
    consumer = two_account_consumer(redis, handler, account_of)
    await push(redis, *(message(n, A_QUEUE) for n in range(10)))
    async with running(consumer):
        await eventually(lambda: handler.a.active == 2, what="A's two slots taken")
        await push(redis, message(1000, B_QUEUE))
        await eventually(lambda: handler.b.done == [1000], what="B's message ran while A's slots were full")
        assert handler.a.max_active == 2  # A never took more than its own slots...
        assert await waiting(redis, A_QUEUE) == 8  # ...and the rest of its backlog waits in Redis
        handler.a.release.set()
        await eventually(lambda: len(handler.a.done) == 10, what="A's backlog ran once its slots freed")
    await redis.aclose()


async def test_with_one_group_the_same_backlog_holds_back_the_other_queue() -> None:
    """The counterpart: without account groups, B waits behind A's (the layout this replaced)."""
    redis = fakeredis.FakeAsyncRedis()
    handler = ByAccount()
    consumer = two_account_consumer(redis, handler, one_group)
    await push(redis, *(message(n, A_QUEUE) for n in range(10)))
    async with running(consumer):
        await eventually(lambda: handler.a.active == 2, what="the two slots taken by A")
        await push(redis, message(1000, B_QUEUE))
        await asyncio.sleep(0.3)
        assert handler.b.done == []
        handler.a.release.set()
        await eventually(lambda: handler.b.done == [1000], what="B ran once A's slots freed")
    await redis.aclose()
