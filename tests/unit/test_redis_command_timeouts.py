"""Command timeouts without a timer per command (`runtime.redis_connection`): a connection that
waits past its timeout is aborted by the event loop's watchdog and the command raises redis-py's
TimeoutError, as redis-py's own per-read timer did; a blocking read gets its longest wait on top;
a command that was answered is never aborted afterwards. Against a silent TCP server (a frozen
Redis) and the real Redis (a blocking read, its namespaced db)."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.exceptions

from order_execution.runtime.redis_connection import open_redis
from order_execution.runtime.settings import RedisSettings
from tests.redis_dbs import redis_db
from tests.silent_server import silent_server


async def test_a_command_a_frozen_redis_never_answers_times_out_within_the_timeout_and_a_tick() -> None:
    async with silent_server() as port:
        client = open_redis(RedisSettings(address=f"127.0.0.1:{port}", socket_timeout_ms=200))
        started = time.monotonic()
        with pytest.raises(redis.exceptions.TimeoutError):
            await client.get("key")
        waited = time.monotonic() - started
        await client.aclose()
    assert 0.2 <= waited < 2.0, f"timed out after {waited:.2f} s"


async def test_a_pipeline_a_frozen_redis_never_answers_times_out_too() -> None:
    async with silent_server() as port:
        client = open_redis(RedisSettings(address=f"127.0.0.1:{port}", socket_timeout_ms=200))
        pipe = client.pipeline(transaction=False)
        pipe.get("a")
        pipe.get("b")
        with pytest.raises(redis.exceptions.TimeoutError):
            await pipe.execute()
        await client.aclose()


@pytest.mark.integration
async def test_a_blocking_read_may_wait_its_block_and_an_answered_connection_is_left_alone(
    real_redis: str,
) -> None:
    address, _, port = real_redis.rpartition(":")
    settings = RedisSettings(address=f"{address}:{port}", db=redis_db(__name__), socket_timeout_ms=100)
    client = open_redis(settings, blocking_reads_ms=600)
    key = f"command-timeouts-{time.monotonic_ns()}"
    started = time.monotonic()
    # Blocks 0.4 s: past the 0.1 s socket timeout, within it plus the blocking reads' 0.6 s.
    assert await client.blpop([key], timeout=0.4) is None
    assert time.monotonic() - started >= 0.4
    assert await client.set(key, "1")
    await asyncio.sleep(1.0)  # idle well past the timeout: nothing to abort
    assert await client.get(key) == b"1"
    await client.delete(key)
    await client.aclose()


@pytest.mark.integration
async def test_the_pool_takes_back_a_cancelled_commands_connection_and_never_lists_one_twice(
    real_redis: str,
) -> None:
    address, _, port = real_redis.rpartition(":")
    client = open_redis(RedisSettings(address=f"{address}:{port}", db=redis_db(__name__)))
    pool = client.connection_pool
    key = f"command-timeouts-{time.monotonic_ns()}"

    async def blpop() -> object:
        return await client.blpop([key], timeout=5)

    blocked = asyncio.create_task(blpop())
    await asyncio.sleep(0.1)
    blocked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocked
    await asyncio.gather(*(client.ping() for _ in range(5)))
    assert not pool._in_use_connections  # nothing leaked by the cancel
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]  # redis-py's, unannotated
    await pool.release(connection)
    await pool.release(connection)  # twice: a bug elsewhere must not hand it to two callers
    assert pool._available_connections.count(connection) == 1
    await client.aclose()
