"""Dramatiq's Redis queues from asyncio: fetch, ack, nack, requeue, enqueue.

The storage layout and the Lua script are Dramatiq's own (`dramatiq/brokers/redis/
dispatch.lua`), so Dramatiq's tooling and dashboard read these queues and a message
fetched here is in this worker's ack set until it is acked: if the process dies, any
other worker's maintenance pass puts it back on its queue once this worker's heartbeat
is `heartbeat_timeout_ms` old. Every command refreshes the heartbeat.

Commands for several queues go out in one pipeline, so fetching from twenty symbol
queues or acking a batch of messages costs one round trip. A message queued or requeued
here rings its queue's doorbell with the store's `RING` script, under the store's cap
(`orders.store_scripts`, which every producer shares). It is sent as EVAL, never EVALSHA:
it cannot fail with NOSCRIPT, so a pipeline retried after Redis lost its scripts only ever
repeats Dramatiq's commands, which all failed the first time.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from typing import Any
from uuid import uuid4

import redis.asyncio as aioredis
import redis.exceptions
from dramatiq import Message
from dramatiq.common import dq_name

from order_execution.orders.store_outages import store_adapter
from order_execution.orders.store_scripts import DOORBELL_CAP, RING
from order_execution.runtime.redis_connection import reply_text
from order_execution.tasks.queues import DRAMATIQ_NAMESPACE, doorbell_key

HEARTBEAT_TIMEOUT_MS = 15_000  # as every Dramatiq process sharing these queues uses
_DEAD_MESSAGE_TTL_MS = 7 * 86_400_000  # Dramatiq's default: dead letters kept a week
_MAX_UNPACK = 1000  # Lua's unpack() limit is ~8000; we never move more at once


def _dispatch_source() -> str:
    return resources.files("dramatiq.brokers").joinpath("redis", "dispatch.lua").read_text()


@store_adapter
class QueueClient:
    """One worker's view of Dramatiq's Redis queues (`worker_id` names its ack sets)."""

    def __init__(self, redis: aioredis.Redis, *, worker_id: str | None = None) -> None:
        self._redis = redis
        self.worker_id = worker_id or str(uuid4())
        self._source = _dispatch_source()
        self._sha = hashlib.sha1(self._source.encode()).hexdigest()

    def _call(self, pipe: aioredis.client.Pipeline, command: str, queue: str, *rest: Any, **kw: bool) -> None:
        pipe.evalsha(self._sha, 1, DRAMATIQ_NAMESPACE, *self._args(command, queue, *rest, **kw))

    async def _execute(self, build: Callable[[aioredis.client.Pipeline], None]) -> list[Any]:
        """Run the pipeline `build` fills; loads the script first if Redis does not have it.

        (redis-py's Script objects in a pipeline cost a SCRIPT EXISTS round trip every time.)
        """
        for attempt in (1, 2):
            pipe = self._redis.pipeline(transaction=False)
            build(pipe)
            try:
                return list(await pipe.execute())
            except redis.exceptions.NoScriptError:
                if attempt == 2:
                    raise
                await self._redis.script_load(self._source)
        raise AssertionError("unreachable")

    def _args(self, command: str, queue: str, *rest: Any, maintenance: bool = False) -> list[Any]:
        return [
            command,
            int(time.time() * 1000),
            queue,
            self.worker_id,
            HEARTBEAT_TIMEOUT_MS,
            _DEAD_MESSAGE_TTL_MS,
            "1" if maintenance else "0",
            _MAX_UNPACK,
            *rest,
        ]

    async def fetch(
        self,
        wanted: Sequence[tuple[str, int]],
        *,
        maintenance: bool = False,
        bells: Sequence[str] = (),
        acks: Sequence[tuple[str, str]] = (),
    ) -> tuple[list[tuple[str, list[bytes]]], str | None]:
        """Take up to n messages from each (queue, n), in one round trip.

        Returns (queue, payloads) per queue, and which of the doorbell keys `bells` had
        rung (its entries are taken), if any. With `maintenance`, each queue's script run
        also requeues dead workers' messages and drops dead letters older than a week.
        `acks` (queue, redis message id) are acked first, in the same round trip.
        """

        def build(pipe: aioredis.client.Pipeline) -> None:
            self._ack(pipe, acks)
            for queue, count in wanted:
                self._call(pipe, "fetch", queue, count, maintenance=maintenance)
            if bells:
                pipe.lmpop(len(bells), *bells, direction="LEFT", count=DOORBELL_CAP)

        results = (await self._execute(build))[len(acks) :]
        fetched = [
            (queue, [payload for payload in found if payload is not None])
            for (queue, _), found in zip(wanted, results, strict=False)
        ]
        rung = results[-1] if bells else None
        return fetched, (reply_text(rung[0]) if rung else None)

    async def wait_for_bell(
        self, bells: Sequence[str], timeout_s: float, *, acks: Sequence[tuple[str, str]] = ()
    ) -> str | None:
        """Block until one of the doorbell keys `bells` rings; take its entries and return it.

        None after `timeout_s` with no ring. `acks` are acked first, in the same round trip.
        """
        if not acks:
            rung: Any = await self._redis.blmpop(
                timeout_s, len(bells), *bells, direction="LEFT", count=DOORBELL_CAP
            )
        else:

            def build(pipe: aioredis.client.Pipeline) -> None:
                self._ack(pipe, acks)
                pipe.blmpop(timeout_s, len(bells), *bells, direction="LEFT", count=DOORBELL_CAP)

            rung = (await self._execute(build))[-1]
        return reply_text(rung[0]) if rung else None

    def _ack(self, pipe: aioredis.client.Pipeline, acks: Sequence[tuple[str, str]]) -> None:
        # Dispatch's ack removes the id from the ack set first and does nothing if it is not
        # there: sent twice (a round trip cut off after Redis ran it), it changes nothing.
        for queue, message_id in acks:
            self._call(pipe, "ack", queue, message_id)

    async def settle(
        self,
        *,
        acks: Iterable[tuple[str, str]] = (),
        nacks: Iterable[tuple[str, str]] = (),
        requeues: Iterable[tuple[str, str]] = (),
        enqueues: Iterable[tuple[Message[Any], int | None]] = (),
    ) -> None:
        """In one round trip: ack, dead-letter (nack) or requeue (queue, redis message id) pairs,
        and enqueue (message, delay ms or None) pairs. Enqueues go first, so a retry is stored
        before the message it replaces is acked.
        """
        commands = [
            (command, queue, message_id)
            for command, pairs in (("ack", acks), ("nack", nacks), ("requeue", requeues))
            for queue, message_id in pairs
        ]
        delayed = list(enqueues)

        def build(pipe: aioredis.client.Pipeline) -> None:
            rung = [self._enqueue(pipe, message, delay_ms) for message, delay_ms in delayed]
            for command, queue, message_id in commands:
                self._call(pipe, command, queue, message_id)
            # A queued or requeued message is work for whoever is idle: ring once each.
            rung += [queue for command, queue, _ in commands if command == "requeue"]
            bells = [doorbell_key(queue) for queue in rung]
            if bells:
                pipe.eval(RING, len(bells), *bells)

        await self._execute(build)

    def _enqueue(self, pipe: aioredis.client.Pipeline, message: Message[Any], delay_ms: int | None) -> str:
        """Queue `message` as Dramatiq's broker.enqueue does (fresh redis id; eta on the .DQ queue);
        returns the queue it went on."""
        options: dict[str, Any] = {"redis_message_id": str(uuid4())}
        queue = message.queue_name
        if delay_ms is not None:
            queue = dq_name(queue)
            options["eta"] = int(time.time() * 1000) + delay_ms
        message = message.copy(queue_name=queue, options=options)
        self._call(pipe, "enqueue", queue, options["redis_message_id"], message.encode())
        return queue
