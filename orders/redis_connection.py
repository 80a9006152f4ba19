"""The one way every process opens Redis: bounded timeouts, so an outage fails fast.

A Redis that is down or frozen makes a command raise within `socket_timeout_ms`
instead of hanging the caller; the gateway turns that into UNAVAILABLE and the workers
and listener retry. Connections are re-made by redis-py once Redis answers again.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from orders.settings import RedisSettings


def open_redis(settings: RedisSettings, *, blocking_reads_ms: int = 0) -> aioredis.Redis:
    """An asyncio client for the configured Redis; connects lazily.

    A client that issues blocking reads (XREAD BLOCK) passes their longest wait as
    `blocking_reads_ms`, which is added to the socket timeout.
    """
    return aioredis.Redis.from_url(
        settings.url,
        socket_timeout=(settings.socket_timeout_ms + blocking_reads_ms) / 1000,
        socket_connect_timeout=settings.connect_timeout_ms / 1000,
        health_check_interval=10,
        max_connections=settings.max_connections,
    )
