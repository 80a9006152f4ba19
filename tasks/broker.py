"""A stock Dramatiq broker over the service's queues, for tools that need one.

The service itself does not use a Dramatiq broker: the worker consumes the queues with
its own asyncio consumer (workers/consumer.py over tasks/redis_queues.py) and the
gateway enqueues through the order store's script. Tools that speak Dramatiq (its
dashboard; bench/queue_hop.py, which runs Dramatiq's stock Worker for comparison) get
the plain `RedisBroker` here: same namespace, and the same heartbeat timeout as every
other process on these queues, as Dramatiq requires (its maintenance treats a worker
whose heartbeat is older as dead and requeues its messages).
"""

from __future__ import annotations

import redis
from dramatiq.brokers.redis import RedisBroker

from order_execution.tasks.queues import DRAMATIQ_NAMESPACE
from order_execution.tasks.redis_queues import HEARTBEAT_TIMEOUT_MS


def build_broker(redis_url: str, *, client: redis.Redis | None = None) -> RedisBroker:
    """Dramatiq's RedisBroker (its default middleware) on our queues; `client` replaces `redis_url`.

    The service's tools pass `runtime.redis_connection.open_sync_redis(settings.redis)`: its
    timeouts, and with `redis.sentinels` the primary found through Sentinel, followed across a
    failover (an enqueue during the switch raises a ConnectionError at once).
    """
    options = {"namespace": DRAMATIQ_NAMESPACE, "heartbeat_timeout": HEARTBEAT_TIMEOUT_MS}
    if client is not None:
        return RedisBroker(client=client, **options)
    return RedisBroker(url=redis_url, **options)
