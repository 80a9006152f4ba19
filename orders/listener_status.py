"""The listeners' status per exchange account, shared through Redis so any gateway can report it.

The replica leading an account rewrites that account's status hash every lease renewal,
with a time to live of one lease; when no listener leads the account, its hash lapses and
health says so. The hash of the account `default` is `{namespace}:listener:status`, the key
a single-account deployment always used (so its readers see the same shape, with fields
added); any other account's is `{namespace}:@{account}:listener:status` (`orders.account_keys`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import redis.asyncio as aioredis

from order_execution.orders.account_keys import account_prefix
from order_execution.orders.model import DEFAULT_ACCOUNT
from order_execution.orders.store_outages import store_adapter


def status_key(namespace: str, account: str = DEFAULT_ACCOUNT) -> str:
    """The Redis key of `account`'s listener status hash."""
    return f"{account_prefix(namespace, account)}:listener:status"


@store_adapter
class ListenerStatus:
    """Write (listener) and read (gateway health) the status hash of each account."""

    def __init__(self, client: aioredis.Redis, *, namespace: str) -> None:
        self._redis = client
        self._namespace = namespace
        self.key = status_key(namespace)  # the account `default`'s

    async def publish(
        self, fields: Mapping[str, object], *, ttl_ms: int, account: str = DEFAULT_ACCOUNT
    ) -> None:
        """Replace `account`'s fields named in `fields` and give the hash `ttl_ms` to live."""
        key = status_key(self._namespace, account)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(key, mapping={name: str(value) for name, value in fields.items()})
        pipe.pexpire(key, ttl_ms)
        await pipe.execute()

    async def read(self, account: str = DEFAULT_ACCOUNT) -> dict[str, str]:
        """`account`'s last status written, or {} if no listener leads it."""
        raw = cast(dict[bytes, bytes], await self._redis.hgetall(status_key(self._namespace, account)))
        return _decoded(raw)

    async def read_accounts(self, accounts: Sequence[str]) -> dict[str, dict[str, str]]:
        """Each of `accounts`' status (as `read`), in one round trip, in the order given."""
        pipe = self._redis.pipeline(transaction=False)
        for account in accounts:
            pipe.hgetall(status_key(self._namespace, account))
        replies = cast(list[dict[bytes, bytes]], await pipe.execute())
        return {account: _decoded(raw) for account, raw in zip(accounts, replies, strict=True)}


def _decoded(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}
