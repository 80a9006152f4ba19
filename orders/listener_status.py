"""The active listener's status, shared through Redis so any gateway can report it.

The leading listener rewrites `{namespace}:listener:status` every lease renewal with a
time to live of one lease; when no listener leads, the key lapses and health says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import redis.asyncio as aioredis

from order_execution.orders.store_outages import store_adapter


@store_adapter
class ListenerStatus:
    """Write (listener) and read (gateway health) the status hash."""

    def __init__(self, client: aioredis.Redis, *, namespace: str) -> None:
        self._redis = client
        self.key = f"{namespace}:listener:status"

    async def publish(self, fields: Mapping[str, object], *, ttl_ms: int) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self.key, mapping={name: str(value) for name, value in fields.items()})
        pipe.pexpire(self.key, ttl_ms)
        await pipe.execute()

    async def read(self) -> dict[str, str]:
        """The last status written, or {} if no listener leads."""
        raw = cast(dict[bytes, bytes], await self._redis.hgetall(self.key))
        return {k.decode(): v.decode() for k, v in raw.items()}
