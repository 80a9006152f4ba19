"""The one way every process opens Redis: bounded timeouts, so an outage fails fast.

A Redis that is down or frozen makes a command raise within `socket_timeout_ms`
instead of hanging the caller; the gateway turns that into UNAVAILABLE and the workers
and listener retry. Connections are re-made by redis-py once Redis answers again.

With `redis.sentinels` set, the primary is whatever the sentinels say it is
(`redis.master_name`), asked again each time a connection is made, so a failover is
followed without a restart. What a client sees while the primary changes:

* its connections to the old primary break (ConnectionError) or, for a blocking read on a
  machine that vanished, time out (TimeoutError) within the socket timeout;
* a new connection asks the sentinels: while they know no healthy primary they say so at
  once (`MasterNotFoundError`, a ConnectionError);
* an old primary that is now a replica answers READONLY (or, for a blocking read, UNBLOCKED),
  and one cut off from its replicas answers NOREPLICAS (`min-replicas-to-write`): each
  drops the connection and raises a ConnectionError (redis-py's for the first two,
  `PrimaryChanged` for NOREPLICAS), so the next command asks the sentinels again.

Every one of these is a ConnectionError or TimeoutError: outages the Redis adapters raise
as StoreUnavailable (orders/store_outages.py), which the workers and listener retry and the
gateway answers with UNAVAILABLE. The same client object works again as soon as the
sentinels name the new primary.

`open_redis` is for the asyncio processes (gateway, workers, listener); `open_sync_redis`
for the threaded ones (Dramatiq's broker in the dashboard and tools, the CLI's checks).
`reply_text` reads a key, member or value those clients return as text.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel as syncsentinel
from redis.exceptions import ResponseError

from order_execution.runtime.settings import RedisSettings

_HEALTH_CHECK_INTERVAL_S = 10
_CUT_OFF_PRIMARY = "NOREPLICAS"


class PrimaryChanged(redis.exceptions.ConnectionError):
    """The server a Sentinel client reached is no longer the primary it should write to."""


def is_cut_off_primary(error: ResponseError) -> bool:
    """NOREPLICAS: a primary that cannot reach `min-replicas-to-write` replicas refuses writes."""
    return error.status_code == _CUT_OFF_PRIMARY or str(error).startswith(_CUT_OFF_PRIMARY)


class _AsyncSentinelConnection(aiosentinel.SentinelManagedConnection):
    """redis-py's Sentinel connection (READONLY and UNBLOCKED re-ask the sentinels), plus NOREPLICAS."""

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except ResponseError as exc:
            if not is_cut_off_primary(exc):
                raise
            await self.disconnect()
            raise PrimaryChanged(
                "order store (Redis) primary is cut off from its replicas (NOREPLICAS)"
            ) from exc


class _SyncSentinelConnection(syncsentinel.SentinelManagedConnection):
    """The same for the threaded clients."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except ResponseError as exc:
            if not is_cut_off_primary(exc):
                raise
            self.disconnect()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            raise PrimaryChanged(
                "order store (Redis) primary is cut off from its replicas (NOREPLICAS)"
            ) from exc


class _AsyncSentinelRedis(aioredis.Redis):
    """A client of the primary that, closed, also closes its connections to the sentinels."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        pool = self.connection_pool
        if isinstance(pool, aiosentinel.SentinelConnectionPool):
            await pool.sentinel_manager.aclose()


class _SyncSentinelRedis(redis.Redis):
    """The same for the threaded clients."""

    def close(self) -> None:
        super().close()
        pool = self.connection_pool
        if isinstance(pool, syncsentinel.SentinelConnectionPool):
            pool.sentinel_manager.close()


def _timeouts(settings: RedisSettings, blocking_reads_ms: int) -> dict[str, Any]:
    return {
        "socket_timeout": (settings.socket_timeout_ms + blocking_reads_ms) / 1000,
        "socket_connect_timeout": settings.connect_timeout_ms / 1000,
        "health_check_interval": _HEALTH_CHECK_INTERVAL_S,
        "max_connections": settings.max_connections,
    }


def _sentinel_options(settings: RedisSettings) -> dict[str, Any]:
    """How the sentinels themselves are asked: the plain socket timeout (never a blocking read's),
    with `sentinel_password` (none if empty)."""
    options: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout_ms / 1000,
        "socket_connect_timeout": settings.connect_timeout_ms / 1000,
    }
    if settings.sentinel_password.get_secret_value():
        options["password"] = settings.sentinel_password.get_secret_value()
    return options


def _data_node_auth(settings: RedisSettings) -> dict[str, Any]:
    password = settings.password.get_secret_value()
    return {"password": password or None, "db": settings.db}


def open_redis(settings: RedisSettings, *, blocking_reads_ms: int = 0) -> aioredis.Redis:
    """An asyncio client for the configured Redis (its primary, with sentinels); connects lazily.

    A client that issues blocking reads (XREAD BLOCK, BLMPOP) passes their longest wait as
    `blocking_reads_ms`, which is added to the socket timeout of the data connections: a
    blocked read on a primary that vanished without closing its sockets ends within it.
    """
    options = _timeouts(settings, blocking_reads_ms)
    if not settings.sentinels:
        return aioredis.Redis.from_url(settings.url, **options)
    sentinels = aiosentinel.Sentinel(settings.sentinel_addresses, sentinel_kwargs=_sentinel_options(settings))
    client: aioredis.Redis = sentinels.master_for(
        settings.master_name,
        redis_class=_AsyncSentinelRedis,
        connection_class=_AsyncSentinelConnection,
        **_data_node_auth(settings),
        **options,
    )
    return client


def open_sync_redis(settings: RedisSettings, *, blocking_reads_ms: int = 0) -> redis.Redis:
    """The threaded counterpart of `open_redis`: same timeouts, pool size and Sentinel handling."""
    options = _timeouts(settings, blocking_reads_ms)
    if not settings.sentinels:
        return redis.Redis.from_url(settings.url, **options)
    sentinels = syncsentinel.Sentinel(
        settings.sentinel_addresses, sentinel_kwargs=_sentinel_options(settings)
    )
    client: redis.Redis = sentinels.master_for(
        settings.master_name,
        redis_class=_SyncSentinelRedis,
        connection_class=_SyncSentinelConnection,
        **_data_node_auth(settings),
        **options,
    )
    return client


def reply_text(value: bytes | str) -> str:
    """A key, member or value Redis returned, as text.

    The clients opened here answer bytes, decoded as UTF-8 (UnicodeDecodeError if they are
    not); a client opened with decode_responses (some tests' fakes) already answers str,
    returned as it is.
    """
    return value.decode() if isinstance(value, bytes) else value
