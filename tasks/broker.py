"""A Dramatiq Redis broker whose consumers are woken instead of polling.

Dramatiq's Redis consumer sleeps with a growing backoff (up to `worker_timeout`,
1 s by default) when its queue is empty, so the first order after a quiet second
waits up to a second. Here every enqueue also pushes onto the queue's doorbell list
and an idle consumer waits on that list with BLPOP, using the same backoff as the
timeout. A message is picked up within one Redis round trip, and idle consumers use
no CPU. Storage layout and scripts are Dramatiq's own.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from dramatiq import Message
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import AsyncIO, CurrentMessage, Retries, ShutdownNotifications

from tasks.queues import DRAMATIQ_NAMESPACE, doorbell_key

DOORBELL_CAP = 16
# While every prefetched message is still being processed there is nothing to fetch
# and no doorbell to wait for; check back this often.
_BUSY_RECHECK_S = 0.002


class DoorbellRedisBroker(RedisBroker):
    """RedisBroker that rings a per-queue doorbell on enqueue (see module docstring)."""

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _DoorbellConsumer

    def do_enqueue(self, queue_name: str, message_id: str, data: bytes) -> Any:
        result = self._dispatch("enqueue")(queue_name, message_id, data)
        bell = doorbell_key(queue_name)
        pipe = self.client.pipeline(transaction=False)
        pipe.rpush(bell, 1)
        pipe.ltrim(bell, -DOORBELL_CAP, -1)
        pipe.execute()
        return result


class _DoorbellConsumer(_RedisConsumer):
    def __next__(self) -> MessageProxy | None:
        try:
            while self.message_cache:
                data = self.message_cache.pop(0)
                if data is None:
                    continue
                self.misses = 0
                message: Message[Any] = Message.decode(data)
                self.queued_message_ids.add(message.message_id)
                return MessageProxy(message)

            room = self.prefetch - self.outstanding_message_count
            if room <= 0:
                time.sleep(_BUSY_RECHECK_S)
                return None
            self.message_cache = self.broker.do_fetch(self.queue_name, room)
            if self.message_cache:
                return self.__next__()
            self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
            self.broker.client.blpop([doorbell_key(self.queue_name)], timeout=backoff_ms / 1000)
            return None
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None


def build_broker(redis_url: str, *, client: redis.Redis | None = None) -> DoorbellRedisBroker:
    """The broker every process uses; pass `client` to run on fakeredis in tests.

    Heartbeat and maintenance settings are the same in every process, as Dramatiq
    requires: a crashed worker's unacked messages come back after 15 s.
    """
    options: dict[str, Any] = {
        "namespace": DRAMATIQ_NAMESPACE,
        "heartbeat_timeout": 15_000,
        "maintenance_chance": 10_000,
        "middleware": [ShutdownNotifications(), CurrentMessage(), Retries(), AsyncIO()],
    }
    if client is not None:
        return DoorbellRedisBroker(client=client, **options)
    return DoorbellRedisBroker(url=redis_url, **options)
