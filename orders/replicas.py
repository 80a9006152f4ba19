"""Acknowledged means replicated: Redis WAIT, pipelined with a write, and a probe for readers.

Redis replicates asynchronously, so a write the primary answered can still be lost by a
failover. With `redis.min_replica_acks` n > 0 a write is followed, in the same pipeline (one
round trip, not a transaction: WAIT inside MULTI returns at once), by `WAIT n timeout_ms`;
fewer than n replicas confirming in time means the write is on the primary only and may be
taken back, so it is not acknowledged (`NotReplicated`).

A reader (the gateway's stream tail, the NATS relay) wrote nothing of what it read, so WAIT
alone would confirm nothing; it writes a probe key of its own and WAITs for that. Replication
is one ordered stream: once a replica acknowledged the probe, it holds every entry written
before it, which is everything the reader saw. With n = 0 nothing here sends a command.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from order_execution.orders.errors import NotReplicated
from order_execution.orders.model import now_ms
from order_execution.orders.store_outages import store_adapter
from order_execution.runtime.settings import RedisSettings

PROBE_TTL_S = 3600  # a probe key outlives its reader by this much, then goes


@dataclass(frozen=True, slots=True)
class ReplicaAcks:
    """How many replicas must confirm a write (0: the primary alone) and how long to wait (ms)."""

    needed: int = 0
    timeout_ms: int = 500

    @classmethod
    def from_settings(cls, settings: RedisSettings) -> ReplicaAcks:
        """`redis.min_replica_acks` and `redis.replica_ack_timeout_ms`."""
        return cls(needed=settings.min_replica_acks, timeout_ms=settings.replica_ack_timeout_ms)

    @property
    def enabled(self) -> bool:
        return self.needed > 0

    def add_wait(self, pipe: Any) -> None:
        """Append `WAIT needed timeout_ms` to `pipe` (a non-transactional pipeline); nothing if 0."""
        if self.enabled:
            pipe.execute_command("WAIT", self.needed, self.timeout_ms)

    def require(self, acks: int, *, what: str, retry: str, outcome: object = None) -> None:
        """Raise NotReplicated unless `acks` (WAIT's answer) reaches `needed`.

        `what` names what was written ("order X"), `retry` says how to repeat it safely;
        `outcome` is what the write returned on the primary, kept on the error.
        """
        if acks < self.needed:
            raise NotReplicated(
                what, retry, acks=acks, needed=self.needed, timeout_ms=self.timeout_ms, outcome=outcome
            )


NO_REPLICA_ACKS = ReplicaAcks()  # the primary alone (`redis.min_replica_acks` 0)


@store_adapter
class ReplicaProbe:
    """Confirms that the replicas hold everything written before now, by a write of its own."""

    def __init__(self, client: aioredis.Redis, acks: ReplicaAcks, *, key: str) -> None:
        self._redis = client
        self.acks = acks
        self.key = key

    async def confirmed(self) -> int:
        """How many replicas acknowledged a probe written now (within `timeout_ms`).

        One round trip: `SET <key> <now> EX`, then `WAIT`. Raises redis errors as they come.
        """
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(self.key, now_ms(), ex=PROBE_TTL_S)
        self.acks.add_wait(pipe)
        replies = await pipe.execute()
        return int(replies[-1]) if self.acks.enabled else 0

    async def holds_all(self) -> bool:
        """Whether at least `needed` replicas hold everything written before this call."""
        return await self.confirmed() >= self.acks.needed
