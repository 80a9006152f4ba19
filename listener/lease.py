"""A leader lease in Redis: one active listener per account, standbys waiting to take over.

The lease is a key holding the holder's id with a time to live. The holder renews it
every third of the TTL; if it dies, the key lapses and a standby's next attempt wins,
so a standby takes over within about one TTL. Renewing re-takes a lapsed key (after a
Redis restart, say) but never one another replica holds.

Two replicas may briefly both believe they lead (a frozen holder wakes up after its
lease lapsed): everything the leader does is safe to do twice (compare-and-set store
writes, de-duplicated publishes), so the lease is for efficiency, not correctness.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from order_execution.orders.store_outages import store_adapter
from order_execution.runtime.redis_connection import reply_text

_HOLD = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] or not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def lease_key(namespace: str) -> str:
    return f"{namespace}:listener:lease"


@store_adapter
class LeaderLease:
    """Acquire, renew and release the listener lease for `holder_id`."""

    def __init__(self, client: aioredis.Redis, *, namespace: str, holder_id: str, ttl_ms: int) -> None:
        self._redis = client
        self.key = lease_key(namespace)
        self.holder_id = holder_id
        self.ttl_ms = ttl_ms
        self._hold = client.register_script(_HOLD)
        self._release = client.register_script(_RELEASE)

    async def hold(self) -> bool:
        """Take the lease if it is free or ours, extending it by the TTL; True if we hold it now."""
        return bool(await self._hold(keys=[self.key], args=[self.holder_id, self.ttl_ms]))

    async def holder(self) -> str | None:
        """Who holds the lease now, if anyone."""
        value = await self._redis.get(self.key)
        return None if value is None else reply_text(value)

    async def release(self) -> None:
        """Give the lease up (at shutdown) so a standby takes over at once."""
        await self._release(keys=[self.key], args=[self.holder_id])
