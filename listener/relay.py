"""The outbox relay: every stored change, published to JetStream once.

Reads the outbox through the consumer group `nats-relay` in batches and publishes a whole
batch at once, from the entries' stored bytes (each entry's trades, then its order version, see
`listener.events`), in outbox order: the messages are written together and their acks collected
with one wait. An entry is acked in the outbox only once JetStream acked every message of it.
Those NATS did not ack (it is down, a publish timed out) stay pending in the group and are
published again, the same bytes under the same message ids, until it does: nothing is
skipped, and orders never wait on it (they are already stored). A relay that dies leaves its
entries pending in the group; the next one claims them first.
With `redis.min_replica_acks` (a `ReplicaProbe`) a batch is published only once the replicas
confirmed a probe written after it (WAIT): a failover cannot take back a version NATS carries.
Message ids make the re-publish of an entry that was published but not acked a no-op:
when the NATS node the relay is on dies mid-publish, the connection moves to another node
of the cluster, the unacked publishes time out and are sent again, and JetStream stores
each once (see `listener.events`).

One wake-up of the relay takes everything ready: a read returns every entry written since the
last (up to `_BATCH`), and the batch's acks end one wait.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from order_execution.listener.events import EventBus, entry_messages
from order_execution.orders.outbox import Outbox, StoredEntry
from order_execution.orders.replicas import ReplicaProbe

log = logging.getLogger(__name__)

RELAY_GROUP = "nats-relay"
_BACKOFF_MAX_S = 5.0
# A publish is retried at least every second: after a NATS node dies the stream has a new leader
# within seconds, and a longer wait would only add to the pause subscribers see.
_PUBLISH_RETRY_MAX_S = 1.0
_BATCH = 500  # outbox entries read (and published) at once


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
        while pending := await self._outbox.pending(RELAY_GROUP, self._consumer, count=_BATCH):
            await self._until_replicated(pending)
            await self._outbox.ack(RELAY_GROUP, await self._publish_all(bus, pending))
        published: list[str] = []
        while True:
            # The last batch is acked in the same round trip as the next read.
            entries = await self._outbox.read_group(
                RELAY_GROUP, self._consumer, count=_BATCH, block_ms=self._block_ms, ack_first=published
            )
            published = []
            await self._until_replicated(entries)
            published = await self._publish_all(bus, entries)

    async def _until_replicated(self, entries: list[StoredEntry]) -> None:
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

    async def _publish_all(self, bus: EventBus, entries: list[StoredEntry]) -> list[str]:
        """Publish `entries` until JetStream acked every message of each; return the ids of those
        the outbox has still to ack.

        All at once: the messages are written to the socket together and one wait collects the
        acks. When NATS does not ack some, the entries it did ack are acked in the outbox at
        once, and the others are published again (the same messages, so the same ids) after a
        backoff, until it does.
        """
        # Built once: a retry sends the same bytes.
        messages = [entry_messages(entry) for entry in entries]
        todo = list(range(len(entries)))
        backoff = 0.1
        while True:
            outcomes = await bus.publish_batch([m for i in todo for m in messages[i]])
            failed: list[int] = []
            first_error: Exception | None = None
            at = 0
            for i in todo:
                error = next((e for e in outcomes[at : at + len(messages[i])] if e is not None), None)
                at += len(messages[i])
                if error is not None:
                    failed.append(i)
                    first_error = first_error or error
            self.published += len(todo) - len(failed)
            if not failed:
                return [entries[i].entry_id for i in todo]
            unacked = set(failed)
            await self._outbox.ack(RELAY_GROUP, [entries[i].entry_id for i in todo if i not in unacked])
            log.warning(
                "outbox relay: publishing %d of %d entries from %s failed (%r); retrying in %.1f s",
                len(failed),
                len(todo),
                entries[failed[0]].entry_id,
                first_error,
                backoff,
            )
            todo = failed
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
