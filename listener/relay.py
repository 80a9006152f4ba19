"""The outbox relay: every stored change, published to JetStream once.

Reads the outbox through the consumer group `nats-relay` in batches, publishes every
entry of a batch at once (the order version and the trades it recorded, see
`listener.events`), in outbox order, and acks them only after JetStream acked each.
While NATS is down it waits and retries the same entry,
so nothing is skipped and orders never wait on it (they are already stored). A relay
that dies leaves its entries pending in the group; the next one claims them first.
With `redis.min_replica_acks` (a `ReplicaProbe`) a batch is published only once the replicas
confirmed a probe written after it (WAIT): a failover cannot take back a version NATS carries.
Message ids make the re-publish of an entry that was published but not acked a no-op:
when the NATS node the relay is on dies mid-publish, the connection moves to another node
of the cluster, the unacked publishes time out and are sent again, and JetStream stores
each once (see `listener.events`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from order_execution.listener.events import EventBus
from order_execution.orders.outbox import Outbox, OutboxEntry
from order_execution.orders.replicas import ReplicaProbe

log = logging.getLogger(__name__)

RELAY_GROUP = "nats-relay"
_BACKOFF_MAX_S = 5.0
# A publish is retried at least every second: after a NATS node dies the stream has a new leader
# within seconds, and a longer wait would only add to the pause subscribers see.
_PUBLISH_RETRY_MAX_S = 1.0


class OutboxRelay:
    """Relays the outbox to NATS for as long as `run` runs."""

    def __init__(
        self,
        outbox: Outbox,
        connect: Callable[[], Awaitable[EventBus]],
        *,
        consumer: str,
        block_ms: int = 500,
        replicas: ReplicaProbe | None = None,
    ) -> None:
        self._outbox = outbox
        self._replicas = replicas
        self._connect = connect
        self._consumer = consumer
        self._block_ms = block_ms
        self._bus: EventBus | None = None
        self.published = 0

    @property
    def nats_connected(self) -> bool:
        return self._bus is not None and self._bus.connected

    @property
    def nats_server(self) -> str:
        """host:port of the NATS server the relay publishes through now ("" while it has none)."""
        return self._bus.server if self._bus is not None else ""

    async def run(self) -> None:
        """Relay until cancelled; errors are logged and retried with backoff."""
        try:
            while True:
                try:
                    await self._relay()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("outbox relay: %r; resuming in 1 s", exc)
                    await asyncio.sleep(1.0)
        finally:
            if self._bus is not None:
                await self._bus.close()
                self._bus = None

    async def _relay(self) -> None:
        bus = await self._bus_connected()
        await self._outbox.ensure_group(RELAY_GROUP)
        # Whatever a previous relay (or this one, before an error) took but did not ack.
        while pending := await self._outbox.pending(RELAY_GROUP, self._consumer):
            await self._until_replicated(pending)
            await self._publish_all(bus, pending)
            await self._outbox.ack(RELAY_GROUP, [e.entry_id for e in pending])
        published: list[str] = []
        while True:
            # The last batch is acked in the same round trip as the next read.
            entries = await self._outbox.read_group(
                RELAY_GROUP, self._consumer, block_ms=self._block_ms, ack_first=published
            )
            published = []
            await self._until_replicated(entries)
            await self._publish_all(bus, entries)
            published = [e.entry_id for e in entries]

    async def _until_replicated(self, entries: list[OutboxEntry]) -> None:
        """Return once the replicas hold `entries` (at once without `replicas` or entries);
        probes again while they do not (each probe waits up to the ack timeout)."""
        if self._replicas is None or not entries:
            return
        held = False
        while not await self._replicas.holds_all():
            if not held:
                held = True
                log.warning(
                    "outbox relay: holding %d entries from %s until %d replica(s) confirm them "
                    "(redis.min_replica_acks)",
                    len(entries),
                    entries[0].entry_id,
                    self._replicas.acks.needed,
                )
        if held:
            log.info("outbox relay: replicas confirmed; publishing again")

    async def _publish_all(self, bus: EventBus, entries: list[OutboxEntry]) -> None:
        # All at once: nats-py writes them to the socket together and the acks come back
        # together, rather than a round trip each. Subjects see them in outbox order unless
        # one is retried; every message carries its order's version.
        await asyncio.gather(*(self._publish(bus, entry) for entry in entries))

    async def _publish(self, bus: EventBus, entry: OutboxEntry) -> None:
        backoff = 0.1
        while True:
            try:
                await bus.publish_update(entry.order, entry.fills, update_type=entry.update_type)
                self.published += 1
                return
            except Exception as exc:  # nats-py raises several unrelated types while reconnecting
                log.warning(
                    "outbox relay: publishing %s failed (%r); retrying in %.1f s",
                    entry.entry_id,
                    exc,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _PUBLISH_RETRY_MAX_S)

    async def _bus_connected(self) -> EventBus:
        backoff = 0.2
        while self._bus is None:
            try:
                self._bus = await self._connect()
                log.info("outbox relay connected to NATS at %s", self._bus.server or "?")
            except Exception as exc:  # the stream could not be set up (no JetStream leader yet, replicas)
                log.warning("outbox relay: NATS not ready (%r); retrying in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
        return self._bus
