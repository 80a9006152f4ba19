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

The asyncio clients time their commands out without a timer per command: redis-py would
wrap every send in `asyncio.wait_for` (a task) and every read in an `asyncio.timeout`, about
60 µs of CPU per round trip on the service's machine, a third of what a round trip costs.
Instead each connection notes when it started waiting, and one watchdog task per event loop
(`_Watchdog`) aborts a connection that has waited longer than the timeout; the command on it
then raises redis-py's TimeoutError, as the per-command timer would have, within a quarter of
the timeout more. redis-py's health-check PING before a connection idle for a while is off
for the same reason: the pool already re-connects a connection whose socket was closed, and a
command on one that died silently fails like any other (ConnectionError, or the timeout).
Their pools (`_QuietPool`) also skip what redis-py does on every checkout and return beyond
handing the connection over (its connection metrics and events, which nothing here reads, and
a lock that one event loop, never awaiting between taking and returning, does not need).

`open_redis` is for the asyncio processes (gateway, workers, listener); `open_sync_redis`
for the threaded ones (Dramatiq's broker in the dashboard and tools, the CLI's checks).
`reply_text` reads a key, member or value those clients return as text.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel as syncsentinel
from redis.exceptions import ResponseError

from order_execution.runtime.settings import RedisSettings

_HEALTH_CHECK_INTERVAL_S = 10  # the threaded clients'
_CUT_OFF_PRIMARY = "NOREPLICAS"
_WATCH_TICK_MAX_S = 0.25  # the watchdog looks at least this often (a quarter of a short timeout)


class PrimaryChanged(redis.exceptions.ConnectionError):
    """The server a Sentinel client reached is no longer the primary it should write to."""


def is_cut_off_primary(error: ResponseError) -> bool:
    """NOREPLICAS: a primary that cannot reach `min-replicas-to-write` replicas refuses writes."""
    return error.status_code == _CUT_OFF_PRIMARY or str(error).startswith(_CUT_OFF_PRIMARY)


class _Watchdog:
    """Aborts, for one event loop, the connections that have waited past their timeout."""

    def __init__(self) -> None:
        self._connections: weakref.WeakSet[_TimedConnection] = weakref.WeakSet()
        self._task: asyncio.Task[None] | None = None
        self._tick_s = _WATCH_TICK_MAX_S

    def watch(self, connection: _TimedConnection) -> None:
        self._connections.add(connection)
        self._tick_s = min(self._tick_s, max(connection.command_timeout_s / 4, 0.005))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="redis-command-timeouts")

    async def _run(self) -> None:
        while self._connections:
            await asyncio.sleep(self._tick_s)
            now = time.monotonic()
            for connection in list(self._connections):
                connection.abort_if_late(now)


_watchdogs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watchdog] = weakref.WeakKeyDictionary()


class _TimedConnection(aioredis.connection.AbstractConnection):
    """A connection whose commands time out through `_Watchdog` (module docstring), not a timer
    each: `command_timeout_s` is the socket timeout redis-py would have applied to every read."""

    command_timeout_s: float = 1.0

    def __init__(self, *args: Any, command_timeout_s: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.command_timeout_s = command_timeout_s
        self._waiting_since: float | None = None
        self._timed_out = False

    async def connect(self, *args: Any, **kwargs: Any) -> None:
        if self.is_connected:  # the pool asks before every command
            return
        self._timed_out = False
        # Watched from before the handshake: a frozen server accepts the socket, then never answers.
        loop = asyncio.get_running_loop()
        watchdog = _watchdogs.get(loop)
        if watchdog is None:
            watchdog = _watchdogs[loop] = _Watchdog()
        watchdog.watch(self)
        await super().connect(*args, **kwargs)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated

    async def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
        self._start_waiting()
        try:
            await super().send_packed_command(*args, **kwargs)
        except (redis.exceptions.ConnectionError, OSError) as exc:
            self._waiting_since = None
            self._raise_if_late(exc)
            raise

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        self._start_waiting()
        try:
            return await super().read_response(*args, **kwargs)
        except (redis.exceptions.ConnectionError, OSError) as exc:
            self._raise_if_late(exc)
            raise
        finally:
            self._waiting_since = None

    def abort_if_late(self, now: float) -> None:
        since = self._waiting_since
        if since is None or now - since < self.command_timeout_s:
            return
        self._timed_out = True
        self._waiting_since = None
        writer = getattr(self, "_writer", None)
        if writer is not None:
            writer.transport.abort()

    def _start_waiting(self) -> None:
        if self._waiting_since is None:
            self._waiting_since = time.monotonic()

    def _raise_if_late(self, exc: BaseException) -> None:
        if self._timed_out:
            raise redis.exceptions.TimeoutError("Timeout reading from socket") from exc


class _QuietPool(aioredis.ConnectionPool):
    """A pool that hands connections over and takes them back, and nothing more (module docstring)."""

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        connection = self.get_available_connection()  # type: ignore[no-untyped-call]  # unannotated
        try:
            await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection

    async def release(self, connection: aioredis.connection.AbstractConnection) -> None:
        # Never awaits before the connection is back: a cancelled caller cannot leak it.
        if connection not in self._in_use_connections:
            return  # not ours, or returned twice: never listed as free twice
        self._in_use_connections.remove(connection)
        self._available_connections.append(connection)
        if connection.should_reconnect():  # type: ignore[no-untyped-call]  # unannotated
            await connection.disconnect()


_mixed_classes: dict[tuple[type[Any], type[Any]], type[Any]] = {}


def _mixed(mixin: type[Any], base: type[Any]) -> type[Any]:
    """`base` with `mixin` in front of it (one class per pair, so pools and connections of every
    client share their classes)."""
    if (mixin, base) not in _mixed_classes:
        name = f"{mixin.__name__.strip('_')}{base.__name__}"
        _mixed_classes[mixin, base] = type(name, (mixin, base), {})
    return _mixed_classes[mixin, base]


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


def _timed_options(
    settings: RedisSettings,
    blocking_reads_ms: int,
    connection_class: type[aioredis.connection.AbstractConnection],
) -> dict[str, Any]:
    """`_timeouts` for an asyncio client: no socket timeout, the watchdog's instead, no health check."""
    options = _timeouts(settings, blocking_reads_ms)
    return {
        **options,
        "socket_timeout": None,
        "command_timeout_s": options["socket_timeout"],
        "health_check_interval": 0,
        "connection_class": _mixed(_TimedConnection, connection_class),
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
    if not settings.sentinels:
        url_class = aioredis.connection.parse_url(settings.url).get("connection_class")
        options = _timed_options(settings, blocking_reads_ms, url_class or aioredis.connection.Connection)
        pool = _mixed(_QuietPool, aioredis.ConnectionPool).from_url(settings.url, **options)
        return aioredis.Redis.from_pool(pool)
    sentinels = aiosentinel.Sentinel(settings.sentinel_addresses, sentinel_kwargs=_sentinel_options(settings))
    client: aioredis.Redis = sentinels.master_for(
        settings.master_name,
        redis_class=_AsyncSentinelRedis,
        connection_pool_class=_mixed(_QuietPool, aiosentinel.SentinelConnectionPool),
        **_data_node_auth(settings),
        **_timed_options(settings, blocking_reads_ms, _AsyncSentinelConnection),
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
