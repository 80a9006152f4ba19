"""The worker's consumer: Dramatiq's symbol queues served by asyncio tasks.

Dramatiq's own Worker runs each message on a thread and parks that thread for the
whole life of an async actor, so the orders in flight equal the thread count and each
costs thread hand-offs; its consumers poll. Here one event loop fetches messages, runs
up to `max_in_flight` handlers at once as tasks, and acks them in batches. Queues,
message format, ack sets, retries (`retries` option, delayed `.DQ` queues) and dead
letters (`.XQ`) stay Dramatiq's (tasks/redis_queues.py).

Waking: every enqueue rings its queue's doorbell. With nothing to fetch the consumer
blocks on all its doorbells at once (BLMPOP: no CPU while idle); a queue that filled
its share of a fetch is fetched again at once, and each fetch also takes the next rung
doorbell, so a busy queue cannot starve a quiet one. Every `sweep_interval_s` a sweep
fetches from every queue whatever the doorbells say: it refreshes the heartbeat and
finds a message whose doorbell another worker took before it died. Every
`maintenance_every` sweeps it also runs Dramatiq's maintenance (a dead worker's
messages go back on their queues).

Groups: `group_of` names each queue's group (the worker's: the exchange account a queue
carries), and each group has its own `max_in_flight` slots. A group whose slots are all
taken (an account whose ORDERS budget is spent: its handlers wait for it, as sleeping
coroutines) is not fetched from, and its doorbells are left to ring, until a slot frees;
the other groups' queues are fetched as before. So one account's backlog waits in Redis,
not in front of another account's orders. While a group is full the consumer blocks on the
other groups' doorbells at most `_FULL_GROUP_POLL_S` at a time, to notice its freed slots.

Acks ride the next fetch: a finished handler's ack waits for the consumer's next round trip
(a fetch or a doorbell wait) and goes out in it, so an order costs no round trip of its own to
ack; acks no fetch took within `ack_delay_s` (a quiet consumer) go out on their own. Dead
letters, retries and requeues go out at once. An ack is idempotent (Dramatiq's script removes
the id from the ack set first and does nothing when it is gone), so a round trip cut off after
Redis ran it is simply sent again; a process that dies first leaves its messages unacked, and
they come back, as any unacked message does, to a handler that finds the order already done.

Delayed messages (retries, scheduled queries) are fetched from `<queue>.DQ`, wait here
until their eta, then move to their queue. A process that dies loses nothing: what it
had fetched and not acked comes back to a queue once its heartbeat is stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from dramatiq import Message
from dramatiq.common import compute_backoff, dq_name, q_name

from order_execution.orders.errors import StoreUnavailable
from order_execution.tasks.queues import doorbell_key
from order_execution.tasks.redis_queues import QueueClient

log = logging.getLogger(__name__)

_RETRY_WAIT_S = 0.5  # after Redis failed us
_DELAYED_BATCH = 100  # delayed messages taken per fetch (they wait here, not in a slot)
_SETTLE_RESERVE_S = 1.0  # of the shutdown grace, kept for the last acks and requeues
_UNWIND_S = 0.2  # for a cancelled handler to record its requeue
_LAST_FLUSH_FLOOR_S = 0.1  # the last flush is tried even when the grace is used up
_LAST_FLUSH_FAILURES: tuple[type[Exception], ...] = (TimeoutError, StoreUnavailable)
_FULL_GROUP_POLL_S = 0.02  # longest doorbell wait while a group has no free slot
ACK_DELAY_S = 0.1  # longest an ack waits for a fetch to carry it


def one_group(queue: str) -> str:
    """Every queue in one group: `max_in_flight` is the whole consumer's."""
    return ""


def never(retries: int, exc: Exception) -> bool:
    return False


@dataclass(frozen=True)
class Handler:
    """What runs an actor's messages, and whether a failure is retried (Dramatiq's options)."""

    run: Callable[..., Awaitable[None]]
    retry_when: Callable[[int, Exception], bool] = never
    min_backoff_ms: int = 100
    max_backoff_ms: int = 5000


@dataclass
class _Settlements:
    """Acks, dead letters, requeues and enqueues waiting for the next batch."""

    acks: list[tuple[str, str]] = field(default_factory=list)
    nacks: list[tuple[str, str]] = field(default_factory=list)
    requeues: list[tuple[str, str]] = field(default_factory=list)
    enqueues: list[tuple[Message[Any], int | None]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.acks or self.nacks or self.requeues or self.enqueues)

    @property
    def only_acks(self) -> bool:
        return not (self.nacks or self.requeues or self.enqueues)


class Consumer:
    """Consumes `queues` (their delayed queues too) with `handlers`, keyed by actor name, up to
    `max_in_flight` messages at once per group of queues (`group_of`)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        queues: list[str],
        handlers: dict[str, Handler],
        *,
        max_in_flight: int,
        sweep_interval_s: float = 1.0,
        maintenance_every: int = 5,
        worker_id: str | None = None,
        group_of: Callable[[str], str] = one_group,
        ack_delay_s: float = ACK_DELAY_S,
    ) -> None:
        self._client = QueueClient(redis, worker_id=worker_id)
        self._queues = [*queues, *(dq_name(q) for q in queues)]
        self._bells = {doorbell_key(q): q for q in self._queues}
        self._group = {q: group_of(q_name(q)) for q in self._queues}
        self._handlers = handlers
        self.max_in_flight = max_in_flight
        self._sweep_interval_s = sweep_interval_s
        self._maintenance_every = maintenance_every
        self._running: dict[asyncio.Task[None], str] = {}  # task -> its group
        self._active: dict[str, int] = dict.fromkeys(self._group.values(), 0)  # group -> running
        self._busy: dict[str, int] = dict.fromkeys(self._group.values(), 0)  # group -> running + backlog
        self._backlog: deque[tuple[str, Message[Any]]] = deque()
        self._delayed: list[tuple[int, int, str, Message[Any]]] = []  # (eta, seq, queue, message)
        self._hot: dict[str, None] = {}  # queues to fetch again at once, in order
        self._slot_freed = asyncio.Event()
        self._pending = _Settlements()
        self._settle_wanted = asyncio.Event()
        self._ack_wait_over = asyncio.Event()  # a fetch took the pending acks, or more than acks wait
        self._ack_delay_s = ack_delay_s
        self._stopping = False  # no new fetches or starts
        self._closing = False  # the settler's last round (run() flushes what follows)
        self._seq = 0

    @property
    def in_flight(self) -> int:
        """Handlers running now."""
        return len(self._running)

    async def enqueue(self, message: Message[Any], delay_ms: int | None = None) -> None:
        """Queue `message` now (after `delay_ms`, through its delayed queue); one round trip."""
        await self._client.settle(enqueues=[(message, delay_ms)])

    async def run(self, stop: asyncio.Event, *, grace_s: float = 10.0) -> None:
        """Consume until `stop` is set, then drain within `grace_s`, Redis up or not.

        Draining: stop fetching; in-flight handlers get the grace period less a reserve
        for settling, then are cancelled (their messages handed back to their queues);
        the acks, requeues and enqueues then go out in one batch. A step that overruns
        (Redis unreachable) is abandoned at the deadline: the messages it would have
        settled stay in this worker's ack set, and any other worker's maintenance puts
        them back on their queues once this worker's heartbeat is stale.

        The loops also end on their flags: redis-py can swallow a cancel that lands
        mid-command, and the settler is never cancelled (a batch cut off mid-flush would
        be sent twice).
        """
        settler = asyncio.create_task(self._settle_forever())
        fetcher = asyncio.create_task(self._fetch_forever())
        await stop.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        reserve_s = min(_SETTLE_RESERVE_S, grace_s / 4)
        self._stopping = True
        self._ack_wait_over.set()  # no more fetches to carry acks
        fetcher.cancel()
        await asyncio.wait({fetcher}, timeout=max(deadline - reserve_s - loop.time(), 0))
        await self._drain(max(deadline - reserve_s - loop.time(), 0))
        self._closing = True
        self._settle_wanted.set()
        await asyncio.wait({settler}, timeout=max(deadline - loop.time(), 0))
        try:
            async with asyncio.timeout(max(deadline - loop.time(), _LAST_FLUSH_FLOOR_S)):
                await self._flush()
        except _LAST_FLUSH_FAILURES as exc:  # what is unacked comes back once our heartbeat is stale
            log.warning("could not settle the last messages (%r); other workers will redeliver them", exc)

    def _room(self, queue: str) -> int:
        """Messages `queue`'s group may still take; a delayed queue's take no slot."""
        if queue.endswith(".DQ"):
            return _DELAYED_BATCH
        return max(self.max_in_flight - self._busy[self._group[queue]], 0)

    async def _fetch_forever(self) -> None:
        sweeps = 0
        next_sweep = 0.0
        while not self._stopping:
            try:
                self._start_backlog()
                open_queues = [q for q in self._queues if self._room(q) > 0]
                full = any(self._room(q) == 0 for q in self._queues)
                hot = [q for q in self._hot if self._room(q) > 0]
                now = time.monotonic()
                if now >= next_sweep:
                    sweeps += 1
                    next_sweep = now + self._sweep_interval_s
                    maintenance = (sweeps - 1) % self._maintenance_every == 0  # the first, then every n-th
                    await self._fetch(self._queues, maintenance=maintenance)
                elif not any(not q.endswith(".DQ") for q in open_queues):
                    self._slot_freed.clear()
                    await _wait(self._slot_freed, min(next_sweep - now, self._until_next_due()))
                elif hot:
                    await self._fetch(hot)
                else:
                    wait_s = min(next_sweep - now, _FULL_GROUP_POLL_S) if full else next_sweep - now
                    await self._wait_for_bell(open_queues, wait_s)
                self._release_due()
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as exc:
                log.warning("queue fetch failed (%r); retrying in %.1f s", exc, _RETRY_WAIT_S)
                await asyncio.sleep(_RETRY_WAIT_S)

    async def _wait_for_bell(self, queues: list[str], timeout_s: float) -> None:
        """Block until the doorbell of one of `queues` rings (or `timeout_s`); its queue becomes hot."""
        timeout_s = min(max(timeout_s, 0.01), self._until_next_due())
        bells = [doorbell_key(q) for q in queues]
        with self._carrying_acks() as acks:
            rung = await self._client.wait_for_bell(bells, timeout_s, acks=acks)
        if rung is not None:
            self._hot[self._bells[rung]] = None

    async def _fetch(self, queues: list[str], *, maintenance: bool = False) -> None:
        """Fetch from `queues` what their groups have room for, spread over each group's queues
        (at least one each while it has room), and start them. A group with no room is asked
        for nothing (the fetch still refreshes the heartbeat and, with `maintenance`, requeues
        dead workers' messages)."""
        per_group: dict[str, int] = {}
        for queue in queues:
            if not queue.endswith(".DQ"):
                per_group[self._group[queue]] = per_group.get(self._group[queue], 0) + 1
        wanted = [
            (q, _DELAYED_BATCH if q.endswith(".DQ") else _share(self._room(q), per_group[self._group[q]]))
            for q in queues
        ]
        quiet = [bell for bell, q in self._bells.items() if q not in queues and self._room(q) > 0]
        with self._carrying_acks() as acks:
            fetched, rung = await self._client.fetch(wanted, maintenance=maintenance, bells=quiet, acks=acks)
        for (queue, payloads), (_, asked) in zip(fetched, wanted, strict=True):
            if asked and len(payloads) >= asked:
                self._hot[queue] = None
            elif asked:  # drained; a queue asked for nothing (no room) may still have more
                self._hot.pop(queue, None)
            for payload in payloads:
                self._accept(queue, Message.decode(payload))
        if rung is not None:
            self._hot[self._bells[rung]] = None
        self._start_backlog()

    @contextlib.contextmanager
    def _carrying_acks(self) -> Iterator[list[tuple[str, str]]]:
        """The pending acks, for the round trip the block makes; if it fails (or is cancelled)
        they are pending again, for the settler to send (twice, if Redis ran them: harmless)."""
        acks, self._pending.acks = self._pending.acks, []
        if acks:
            self._ack_wait_over.set()
        try:
            yield acks
        except BaseException:
            if acks:
                self._pending.acks[:0] = acks
                self._wake_settler()
            raise

    def _accept(self, queue: str, message: Message[Any]) -> None:
        if queue.endswith(".DQ"):
            self._seq += 1
            eta = int(message.options.get("eta", 0))
            heapq.heappush(self._delayed, (eta, self._seq, queue, message))
        else:
            self._backlog.append((queue, message))
            self._busy[self._group[queue]] += 1

    def _start_backlog(self) -> None:
        """Start fetched messages, in order, while their group has a free slot."""
        if self._stopping:
            return
        waiting: deque[tuple[str, Message[Any]]] = deque()
        while self._backlog:
            queue, message = self._backlog.popleft()
            group = self._group[queue]
            if self._active[group] >= self.max_in_flight:
                waiting.append((queue, message))
                continue
            self._active[group] += 1
            task = asyncio.create_task(self._process(queue, message))
            self._running[task] = group
            task.add_done_callback(self._finished)
        self._backlog = waiting

    def _finished(self, task: asyncio.Task[None]) -> None:
        group = self._running.pop(task, None)
        if group is not None:
            self._active[group] -= 1
            self._busy[group] -= 1
        self._slot_freed.set()

    def _until_next_due(self) -> float:
        if not self._delayed:
            return self._sweep_interval_s
        return max((self._delayed[0][0] - _now_ms()) / 1000, 0.01)

    def _release_due(self) -> None:
        """Move delayed messages whose eta has come onto their queue (and ack them on .DQ)."""
        now = _now_ms()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, queue, message = heapq.heappop(self._delayed)
            self._pending.enqueues.append((message.copy(queue_name=q_name(queue)), None))
            self._pending.acks.append((queue, message.options["redis_message_id"]))
            self._wake_settler()

    async def _process(self, queue: str, message: Message[Any]) -> None:
        message_id = message.options["redis_message_id"]
        handler = self._handlers.get(message.actor_name)
        try:
            if handler is None:
                raise LookupError(f"no actor named {message.actor_name!r} in this worker")
            await handler.run(*message.args, **message.kwargs)
        except asyncio.CancelledError:
            self._pending.requeues.append((queue, message_id))
            raise
        except Exception as exc:
            retries = int(message.options.get("retries", 0))
            if handler is not None and handler.retry_when(retries, exc):
                _, delay = compute_backoff(
                    retries, factor=handler.min_backoff_ms, max_backoff=handler.max_backoff_ms
                )
                log.warning("%s failed (%s); retry %d in %d ms", _describe(message), exc, retries + 1, delay)
                retry = message.copy(options={"retries": retries + 1})
                self._pending.enqueues.append((retry, delay))
                self._pending.acks.append((queue, message_id))
            else:
                log.error("%s failed for good (%r); dead-lettered", _describe(message), exc)
                self._pending.nacks.append((queue, message_id))
        else:
            self._pending.acks.append((queue, message_id))
        finally:
            self._wake_settler()

    def _wake_settler(self) -> None:
        self._settle_wanted.set()
        if not self._pending.only_acks:
            self._ack_wait_over.set()  # a dead letter, retry or requeue goes out at once

    async def _settle_forever(self) -> None:
        while not self._closing:
            await self._settle_wanted.wait()
            self._settle_wanted.clear()
            if not self._pending:
                continue  # a fetch took them already
            if self._pending.only_acks and not self._stopping:
                # The fetcher's next round trip carries them, unless it makes none soon.
                self._ack_wait_over.clear()
                await _wait(self._ack_wait_over, self._ack_delay_s)
                if not self._pending:
                    continue
            try:
                await self._flush()
            except Exception as exc:  # a Redis outage above all; nothing may end this loop early
                log.warning("acking messages failed (%r); retrying in %.1f s", exc, _RETRY_WAIT_S)
                await asyncio.sleep(_RETRY_WAIT_S)
                self._settle_wanted.set()

    async def _flush(self) -> None:
        """Send every pending settlement in one round trip; on failure they stay pending."""
        batch, self._pending = self._pending, _Settlements()
        if not batch:
            return
        try:
            await self._client.settle(
                acks=batch.acks, nacks=batch.nacks, requeues=batch.requeues, enqueues=batch.enqueues
            )
        except BaseException:
            self._pending.acks += batch.acks
            self._pending.nacks += batch.nacks
            self._pending.requeues += batch.requeues
            self._pending.enqueues += batch.enqueues
            raise

    async def _drain(self, grace_s: float) -> None:
        """Let in-flight handlers finish within `grace_s`; hand back everything else.

        A cancelled handler gets a moment to unwind; one that ignores its cancel is left
        behind (its message stays unacked, so it is redelivered).
        """
        if self._running:
            log.info("waiting up to %.1f s for %d in-flight messages", grace_s, len(self._running))
            _, still_running = await asyncio.wait(set(self._running), timeout=grace_s)
            for task in still_running:
                task.cancel()
            if still_running:
                await asyncio.wait(still_running, timeout=_UNWIND_S)
        for queue, message in self._backlog:
            self._pending.requeues.append((queue, message.options["redis_message_id"]))
        for _, _, queue, message in self._delayed:
            self._pending.requeues.append((queue, message.options["redis_message_id"]))
        self._backlog.clear()
        self._delayed.clear()


def _share(room: int, queues: int) -> int:
    """Each of a group's `queues`' part of its `room`: at least one while it has any."""
    return max(room // max(queues, 1), 1) if room > 0 else 0


async def _wait(event: asyncio.Event, timeout_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=max(timeout_s, 0))


def _describe(message: Message[Any]) -> str:
    """`actor(key=value, ...)` for the log, long values cut short (a message may carry an order)."""
    shown = ", ".join(f"{k}={str(v)[:40]}" for k, v in message.kwargs.items())
    return f"{message.actor_name}({shown})"


def _now_ms() -> int:
    return int(time.time() * 1000)
