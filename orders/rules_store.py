"""Exchange trading rules shared through Redis.

Workers fetch exchangeInfo and `save` it; gateways `load` it into memory and refresh
it on a timer, so validation costs no Redis round trip per order.
"""

from __future__ import annotations

import json

import redis.asyncio as aioredis

from order_execution.orders.rules import SymbolRules
from order_execution.orders.store_outages import store_adapter
from order_execution.runtime.redis_connection import reply_text


@store_adapter
class RulesStore:
    """The `{namespace}:symbols` hash: symbol -> SymbolRules JSON."""

    def __init__(self, client: aioredis.Redis, *, namespace: str = "oe") -> None:
        self._redis = client
        self._key = f"{namespace}:symbols"

    async def save(self, rules: list[SymbolRules]) -> None:
        """Replace the stored rules of these symbols; other symbols are kept."""
        if rules:
            await self._redis.hset(self._key, mapping={r.symbol: json.dumps(r.to_dict()) for r in rules})

    async def load(self) -> dict[str, SymbolRules]:
        """All stored rules by symbol; empty if no worker has fetched them yet."""
        raw = await self._redis.hgetall(self._key)
        return {reply_text(k): SymbolRules.from_dict(json.loads(v)) for k, v in raw.items()}
