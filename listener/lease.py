"""A leader lease in Redis: one active listener per exchange account, standbys waiting to take over.

Each account has a lease of its own, a key holding the holder's id with a time to live:
`{namespace}:listener:lease` for the account `default` (the key a single-account deployment
always used, so an upgrade changes nothing and old and new replicas contend for the same key),
and `{namespace}:@{account}:listener:lease` for any other (`orders.account_keys`). One replica
may hold any number of them; each is taken, renewed, lost and released on its own. The holder renews it
every third of the TTL; if it dies, the key lapses and a standby's next attempt wins,
so a standby takes over within about one TTL. Renewing re-takes a lapsed key (after a
Redis restart, say) but never one another replica holds.

Two replicas may briefly both believe they lead an account (a frozen holder wakes up after
its lease lapsed, until its next renewal fails and it steps down): there is no fencing token,
because everything a leader does is safe to do twice (compare-and-set store writes,
de-duplicated publishes, idempotent countdowns), so the lease is for efficiency, not correctness.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from order_execution.orders.account_keys import account_prefix
from order_execution.orders.model import DEFAULT_ACCOUNT
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


def lease_key(namespace: str, account: str = DEFAULT_ACCOUNT) -> str:
    """The Redis key of `account`'s listener lease (see the module docstring)."""
    return f"{account_prefix(namespace, account)}:listener:lease"


@store_adapter
class LeaderLease:
    """Acquire, renew and release `account`'s listener lease for `holder_id`."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        namespace: str,
        holder_id: str,
        ttl_ms: int,
        account: str = DEFAULT_ACCOUNT,
    ) -> None:
        self._redis = client
        self.account = account
        self.key = lease_key(namespace, account)
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
