"""Fan-out of order updates from the outbox to the gateway's gRPC streams.

The gateway tails the order store's outbox (one blocking read at a time) and offers
each entry to every registered stream whose filter matches. Because the outbox is
written in the same atomic step as each change, a stream sees every version once, in
commit order, whether or not NATS is up; a Redis outage only pauses the tail, which
resumes from the last entry it read.

A stream that passes a resume token (the entry id of the last update it got) first
replays what it missed from the outbox, then continues live with no gap and no
repeat. A stream that falls `max_backlog` updates behind is closed with its last
token, so its client can resume, rather than slowing every other stream; a replay stops
reading the outbox as soon as that happens. The streams open at once are capped per
client and in all (`max_streams_per_client`, `max_streams`).

Each entry the tail reads is decoded once for the whole gateway, and only while a stream is open:
every stream that wants it (its filter is checked on the decoded entry) gets the same `Update`,
and the first to send it builds the message every other one sends (`Update.rendered`). One
wake-up of the tail takes every entry written since its last read.

On shutdown `close_streams` stops the tail and ends every stream once it has been
given what the tail had already read; the stream's `resume_token` is then the outbox
position the hub had reached, so a client resuming from it on another replica gets
exactly the updates written after what it saw (its filter's updates before that
position were all delivered).

With `redis.min_replica_acks` (a `ReplicaProbe`), the tail passes on only what a replica
holds: after each read it writes its probe with WAIT, and offers the batch once the replicas
confirmed it; until then it holds the batch and reads it again (never dropped, never
reordered), so a failover cannot take back a version a client was shown. A replay stops at
the tail's confirmed position; the tail delivers the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import TypeVar, cast

import redis.exceptions

from order_execution.orders.errors import OrderServiceError, Overloaded, StoreUnavailable
from order_execution.orders.model import Fill, Order, OrderState
from order_execution.orders.outbox import Outbox, OutboxEntry
from order_execution.orders.replicas import ReplicaProbe

log = logging.getLogger(__name__)

_REPLAY_PAGE = 500  # outbox entries read per round trip of a replay
RESUME_TOKEN_METADATA = "resume-token"  # trailing metadata of a stream ended by shutdown
_TAIL_BLOCK_MS = 1000


class SlowSubscriber(OrderServiceError):
    """The stream's reader fell too far behind and was dropped; `resume_token` continues it."""

    def __init__(self, message: str, resume_token: str) -> None:
        super().__init__(message)
        self.resume_token = resume_token


R = TypeVar("R")


def _position(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class Update:
    """One outbox entry as the hub gives it to its streams: decoded once, and the same object
    for every stream that wants it, so what a stream makes of it (`rendered`) is made once."""

    __slots__ = ("_render", "_rendered", "entry", "position")

    def __init__(self, entry: OutboxEntry) -> None:
        self.entry = entry
        self.position = _position(entry.entry_id)
        self._render: Callable[[OutboxEntry], object] | None = None
        self._rendered: object = None

    @property
    def entry_id(self) -> str:
        return self.entry.entry_id

    @property
    def order(self) -> Order:
        return self.entry.order

    @property
    def fills(self) -> tuple[Fill, ...]:
        return self.entry.fills

    @property
    def was(self) -> OrderState | None:
        return self.entry.was

    @property
    def update_type(self) -> str:
        return self.entry.update_type

    def rendered(self, render: Callable[[OutboxEntry], R]) -> R:
        """`render(entry)`, computed by the first caller and kept for the others (per `render`)."""
        if self._render is not render:
            self._rendered = render(self.entry)
            self._render = render
        return cast(R, self._rendered)


class _Subscriber:
    def __init__(
        self,
        symbols: frozenset[str],
        user_id: str,
        max_backlog: int,
        owner: str | None,
        accounts: frozenset[str] | None = None,
    ) -> None:
        self.symbols = symbols
        self.user_id = user_id
        self.owner = owner
        self.accounts = accounts
        self.max_backlog = max_backlog
        # One slot more than the backlog, so the end-of-stream marker always fits.
        self.queue: asyncio.Queue[Update | None] = asyncio.Queue(maxsize=max_backlog + 1)
        self.overflowed = False
        self.ended = False

    def wants(self, entry: OutboxEntry) -> bool:
        order = entry.order
        return (
            (not self.symbols or order.symbol in self.symbols)
            and (not self.user_id or order.user_id == self.user_id)
            and (self.owner is None or order.owner == self.owner)
            and (self.accounts is None or order.account in self.accounts)
        )

    def offer(self, update: Update) -> None:
        if self.overflowed or self.ended or not self.wants(update.entry):
            return
        if self.queue.qsize() < self.max_backlog:
            self.queue.put_nowait(update)
        else:
            self.overflowed = True
            self.queue.put_nowait(None)  # wakes the reader, which then raises SlowSubscriber

    def end(self) -> None:
        """No more entries: the reader stops once it has taken what is queued."""
        if not self.ended and not self.overflowed:
            self.ended = True
            self.queue.put_nowait(None)


class Subscription:
    """A registered stream's updates (`async for`); `resume_token` continues it elsewhere."""

    def __init__(self, hub: UpdateHub, subscriber: _Subscriber, after: str) -> None:
        self._hub = hub
        self._subscriber = subscriber
        self._after = after
        self._last = after
        # Until its replay has run to the end, a stream may only resume after what it was given.
        self.replayed = not after
        self._iterator = hub._iterate(subscriber, after, self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Update:
        return await anext(self._iterator)

    def delivered(self, entry_id: str) -> None:
        self._last = entry_id

    @property
    def resume_token(self) -> str:
        """Where a client continues from: after the last update given, or, once the hub
        closed the stream, after the hub's outbox position ("" if neither is known).
        """
        reached = self._hub.position if self._subscriber.ended and self.replayed else ""
        if reached and reached != "0-0" and (not self._last or _position(reached) > _position(self._last)):
            return reached
        return self._last


class UpdateHub:
    """Tails the outbox and distributes its entries to registered streams."""

    def __init__(
        self,
        outbox: Outbox,
        *,
        max_backlog: int = 10_000,
        max_streams: int | None = None,
        max_streams_per_client: int | None = None,
        replicas: ReplicaProbe | None = None,
    ) -> None:
        """`max_streams` and `max_streams_per_client` cap the streams open at once (None: no cap);
        with `replicas`, only entries they confirmed are passed on (see the module docstring)."""
        self._outbox = outbox
        self._replicas = replicas
        self._holding = False
        self._subscribers: set[_Subscriber] = set()
        self._max_backlog = max_backlog
        self._max_streams = max_streams
        self._max_per_client = max_streams_per_client
        self._per_client: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        self._closed = False
        self._stopping = False
        # The outbox entry id the tail has read (and, with `replicas`, seen confirmed) up to;
        # "" before the first read.
        self.position = ""

    @property
    def open_streams(self) -> int:
        """Streams registered now (every client)."""
        return len(self._subscribers)

    async def start(self, *, wait_s: float = 2.0) -> None:
        """Start tailing from the outbox's current end; waits up to `wait_s` for Redis to answer.

        With Redis away the gateway still starts (and answers UNAVAILABLE); the tail
        begins from wherever the outbox ends once Redis is back.
        """
        self._task = asyncio.create_task(self._tail())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._started.wait(), timeout=wait_s)

    async def stop(self) -> None:
        """Stop tailing (streams still open stay registered; see `close_streams`)."""
        if self._task is not None:
            self._task.cancel()
            # A cancel that lands in redis-py's blocking read can be swallowed; the loop then
            # sees `_stopping` and ends at its next turn (at most one read block later).
            self._stopping = True
            await asyncio.wait({self._task}, timeout=_TAIL_BLOCK_MS / 1000 + 1)

    async def close_streams(self) -> None:
        """Stop tailing and end every stream, present and future, after what it was given.

        Each stream's iteration then ends normally (its `resume_token` says where to
        continue); a stream opened afterwards ends at once.
        """
        self._closed = True
        await self.stop()
        for subscriber in tuple(self._subscribers):
            subscriber.end()

    async def _tail(self) -> None:
        last_id = ""
        backoff = 0.1
        while not self._stopping:
            try:
                if not last_id:
                    start_at = await self._outbox.last_id()
                    if not await self._confirmed(start_at):
                        continue
                    last_id = self.position = start_at
                    self._started.set()
                stored = await self._outbox.read_stored_after(
                    last_id, count=_REPLAY_PAGE, block_ms=_TAIL_BLOCK_MS
                )
                if stored and not await self._confirmed(stored[-1].entry_id):
                    continue  # held: read again from last_id (WAIT's timeout paces this loop)
                backoff = 0.1
            except (StoreUnavailable, redis.exceptions.RedisError) as exc:
                log.warning("update stream: reading the outbox failed (%r); retrying in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            if self._subscribers:  # with no stream open, nothing is decoded
                subscribers = tuple(self._subscribers)
                for entry in stored:
                    update = Update(entry.decode())
                    for subscriber in subscribers:
                        subscriber.offer(update)
            if stored:
                last_id = self.position = stored[-1].entry_id

    async def _confirmed(self, up_to: str) -> bool:
        """Whether the replicas hold the outbox up to `up_to` (always, without `replicas`);
        a hold is logged when it starts and when it ends."""
        if self._replicas is None:
            return True
        held = not await self._replicas.holds_all()
        if held != self._holding:
            self._holding = held
            if held:
                log.warning(
                    "update stream: holding updates up to %s until %d replica(s) confirm them "
                    "(redis.min_replica_acks)",
                    up_to,
                    self._replicas.acks.needed,
                )
            else:
                log.info("update stream: replicas confirmed; passing updates on again")
        return not held

    def resume_point(self, resume_token: str) -> str:
        """The outbox position a client's `resume_token` stands for ("" = from now).

        Raises InvalidOrder for a token that is not one, ResumePointExpired for one older
        than the updates kept.
        """
        return self._outbox.check_resume_token(resume_token) if resume_token else ""

    @asynccontextmanager
    async def subscribe(
        self,
        symbols: Iterable[str],
        *,
        user_id: str = "",
        after: str = "",
        owner: str | None = None,
        accounts: frozenset[str] | None = None,
        client: str = "",
    ) -> AsyncIterator[Subscription]:
        """Register a stream for `symbols` (empty = all) and `user_id` (empty = all) for the block;
        with `owner`, only orders that API client placed (None: every client's); with
        `accounts`, only orders on those exchange accounts (None: every account's), replayed
        or live.

        `client` is who holds the stream, for the caps: Overloaded (limit "max_streams_per_client"
        or "max_streams") if it, or the hub, already holds its cap of open streams.
        With `after` (see `resume_point`), the entries written after it are replayed first.
        Iterating raises SlowSubscriber if the reader falls behind, and ends normally when
        the hub closes its streams (shutdown).
        """
        self._check_caps(client)
        subscriber = _Subscriber(frozenset(symbols), user_id, self._max_backlog, owner, accounts)
        self._subscribers.add(subscriber)
        self._per_client[client] = self._per_client.get(client, 0) + 1
        if self._closed:
            subscriber.end()
        try:
            yield Subscription(self, subscriber, after)
        finally:
            self._subscribers.discard(subscriber)
            left = self._per_client.pop(client) - 1
            if left:
                self._per_client[client] = left

    def _check_caps(self, client: str) -> None:
        """Raise Overloaded naming the cap (and its setting) that one more stream of `client` breaks."""
        held = self._per_client.get(client, 0)
        if self._max_per_client is not None and held >= self._max_per_client:
            raise Overloaded(
                f"client {client!r} already holds {held} update streams on this gateway "
                f"(server.max_streams_per_client = {self._max_per_client}); close one first",
                limit="max_streams_per_client",
            )
        if self._max_streams is not None and len(self._subscribers) >= self._max_streams:
            raise Overloaded(
                f"this gateway already serves {len(self._subscribers)} update streams "
                f"(server.max_streams = {self._max_streams}); retry later or on another gateway",
                limit="max_streams",
            )

    def _replayable(self, entry: OutboxEntry) -> bool:
        """Whether a replay may give `entry` now: with `replicas`, only up to what the tail saw
        confirmed (it offers the later ones to every registered stream once confirmed)."""
        return self._replicas is None or _position(entry.entry_id) <= _position(self.position)

    async def _iterate(
        self, subscriber: _Subscriber, after: str, subscription: Subscription
    ) -> AsyncIterator[Update]:
        last = after
        replayed_to = _position(after) if after else (0, 0)
        if after and not subscriber.ended and self._replicas is not None:
            await self._started.wait()  # the replay stops at the confirmed position: wait for one
        if after and not subscriber.ended:  # replay: registered first, so nothing meanwhile is missed
            replay = self._outbox.replay_after(after, page=_REPLAY_PAGE)
            try:
                # Overflow is checked before each entry is read, so a stream that fell behind
                # while replaying stops reading (and decoding) the outbox at once.
                while not subscriber.overflowed and not subscriber.ended:
                    entry = await anext(replay, None)
                    if entry is None or not self._replayable(entry):
                        subscription.replayed = True  # the tail offers this stream the rest
                        break
                    replayed_to = _position(entry.entry_id)
                    if subscriber.wants(entry):
                        yield Update(entry)
                        last = entry.entry_id
                        subscription.delivered(last)
            finally:
                await replay.aclose()
        while True:
            live = await subscriber.queue.get()
            if live is None and subscriber.ended:
                return
            if live is None or subscriber.overflowed:
                raise SlowSubscriber(
                    f"stream fell more than {self._max_backlog} updates behind; reconnect with "
                    f"resume_token {last!r}",
                    resume_token=last,
                )
            if live.position <= replayed_to:
                continue  # already replayed
            last = live.entry_id
            subscription.delivered(last)
            yield live
