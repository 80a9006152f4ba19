"""A Redis client that counts what the order store reads: index entries and orders.

Subclasses of the real asyncio client and of fakeredis's, so the store under test runs its
own commands and scripts unchanged; the counts say how much one call read, not how long it
took (a bound on work that holds on a loaded machine too).
"""

from __future__ import annotations

from typing import Any

import fakeredis
import redis.asyncio as aioredis


class _Counting:
    """Counts index entries read (ZREVRANGEBYSCORE rows and the paging script's rows) and
    orders fetched (HGETs queued on pipelines); `start_count` starts a new count."""

    index_entries_read = 0
    orders_fetched = 0

    def start_count(self) -> None:
        self.index_entries_read = 0
        self.orders_fetched = 0

    async def zrevrangebyscore(self, *args: Any, **kwargs: Any) -> Any:
        rows = await super().zrevrangebyscore(*args, **kwargs)  # type: ignore[misc]
        self.index_entries_read += len(rows)
        return rows

    async def zrangebyscore(self, *args: Any, **kwargs: Any) -> Any:
        rows = await super().zrangebyscore(*args, **kwargs)  # type: ignore[misc]
        self.index_entries_read += len(rows)
        return rows

    async def evalsha(self, *args: Any) -> Any:
        result = await super().evalsha(*args)  # type: ignore[misc]
        if isinstance(result, list) and len(result) % 2 == 0:  # the paging script: member, score, ...
            self.index_entries_read += len(result) // 2
        return result

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)  # type: ignore[misc]
        queue_hget = pipe.hget
        spy = self

        def hget(name: Any, key: Any) -> Any:
            spy.orders_fetched += 1
            return queue_hget(name, key)

        pipe.hget = hget
        return pipe


class CountingRedis(_Counting, aioredis.Redis):  # type: ignore[misc]  # redis-py's own stubs clash
    """The real client, counting (build it with `CountingRedis.from_url`)."""


class CountingFakeRedis(_Counting, fakeredis.FakeAsyncRedis):  # type: ignore[misc]
    """fakeredis, counting."""
