"""Circuit breakers per endpoint group, their state in Redis so every replica shares it.

Three groups trip on their own: creating orders (`binance_create_order`), canceling
(`binance_cancel_order`) and querying (`binance_query_order`), so a broken order entry
does not stop cancels. Only exchange faults count — timeouts, connection errors, 5xx,
overload — never a business answer (-2019 margin, -5022 post-only, filter failures) nor a
rate-limit or clock answer, which say the exchange is working. The seed's settings:
`failure_threshold` consecutive faults open a breaker for `timeout` seconds; then
`max_requests` successful trial calls close it again. On the trip the original error is
re-raised, not replaced: a timed-out POST must stay "outcome unknown".

pybreaker does the bookkeeping, on a storage that keeps pybreaker's Redis fields (state,
fail_counter, success_counter, opened_at, under `breaker_key`) in memory: a guarded
request never waits on Redis, whether Redis answers, is slow or is frozen. One asyncio
task per process (`Breakers.sync`, started with the event loop) mirrors them: it sends
this process's writes as soon as they are made (a fault counted, a state change,
opened_at) and re-reads every group's shared state every `refresh_s` (0.25 s), all in one
MULTI/EXEC round trip bounded by `sync_timeout_s`. A breaker another replica opens is
therefore seen here within `refresh_s` (plus a round trip). While Redis does not answer,
each process keeps its last known shared state, its breakers keep working on their own,
and its writes wait (merged) for the next round that gets through; the outage is logged
once. Failure counts add up across replicas (INCRBY), as pybreaker's own storage does,
but a replica sees the others' within `refresh_s` rather than at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

import pybreaker
import redis.asyncio as aioredis

from order_execution.exchange.errors import (
    CircuitOpen,
    ClockSkew,
    ExchangeUnavailable,
    OutcomeUnknown,
    RateLimited,
)
from order_execution.orders import metrics
from order_execution.runtime.redis_connection import reply_text
from order_execution.runtime.settings import CircuitBreakerSettings

log = logging.getLogger(__name__)

_FIELDS = ("state", "fail_counter", "success_counter", "opened_at")
# opened_at only moves forward (pybreaker's storage keeps it so with a WATCH transaction): a
# replica whose writes waited out an outage cannot pull a later trip's opened_at back.
_SET_IF_GREATER = """
local current = redis.call('GET', KEYS[1])
if not current or tonumber(ARGV[1]) > tonumber(current) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 0
"""


class Group(StrEnum):
    CREATE = "binance_create_order"
    CANCEL = "binance_cancel_order"
    QUERY = "binance_query_order"


def is_exchange_fault(exc: BaseException) -> bool:
    """Whether `exc` says the exchange is unwell (counts toward opening a breaker)."""
    if isinstance(exc, RateLimited | ClockSkew):
        return False
    return isinstance(exc, ExchangeUnavailable | OutcomeUnknown)


def breaker_key(namespace: str, group: Group, field: str = "state") -> str:
    """The Redis key pybreaker keeps `field` of `group`'s breaker under."""
    return f"{namespace}:breaker:{group}:{pybreaker.CircuitRedisStorage.BASE_NAMESPACE}:{field}"


@dataclass
class _CounterWrites:
    """A shared counter's writes not yet in Redis: a reset (SET 0) first, then `added` (INCRBY)."""

    reset: bool = False
    added: int = 0

    def then(self, newer: _CounterWrites) -> _CounterWrites:
        """These writes followed by `newer` (a reset in `newer` makes these moot)."""
        return newer if newer.reset else _CounterWrites(self.reset, self.added + newer.added)

    def on(self, stored: int) -> int:
        """The counter once these writes are applied to `stored`."""
        return (0 if self.reset else stored) + self.added


@dataclass
class _Writes:
    """One breaker's writes not yet in Redis, merged so that an outage holds a few fields, not a log."""

    create_keys: bool = False  # SETNX the keys as pybreaker does (first sync, or Redis lost them)
    state: str | None = None
    failures: _CounterWrites = field(default_factory=_CounterWrites)
    successes: _CounterWrites = field(default_factory=_CounterWrites)
    opened_at: int | None = None  # epoch seconds, pybreaker's format

    def then(self, newer: _Writes) -> _Writes:
        return _Writes(
            create_keys=self.create_keys or newer.create_keys,
            state=newer.state or self.state,
            failures=self.failures.then(newer.failures),
            successes=self.successes.then(newer.successes),
            opened_at=_latest(self.opened_at, newer.opened_at),
        )


class _MirroredStorage(pybreaker.CircuitBreakerStorage):
    """pybreaker's Redis fields for one breaker, held in memory and mirrored by `Breakers.sync`.

    Every read and write pybreaker makes is a memory access; writes are also queued for
    the next sync, and `wake` tells the sync task there is something to send.
    """

    def __init__(self, namespace: str, wake: Callable[[], None]) -> None:
        super().__init__("redis")
        self.keys = [f"{namespace}:{pybreaker.CircuitRedisStorage.BASE_NAMESPACE}:{name}" for name in _FIELDS]
        self._wake = wake
        self._state = pybreaker.STATE_CLOSED
        self._failures = 0
        self._successes = 0
        self._opened_at: int | None = None
        self._writes = _Writes(create_keys=True)

    # --- pybreaker's storage interface: memory only --------------------------------

    @property
    def state(self) -> str:
        return self._state

    @state.setter
    def state(self, state: str) -> None:
        self._state = str(state)
        self._write(_Writes(state=self._state))

    def increment_counter(self) -> None:
        self._failures += 1
        self._write(_Writes(failures=_CounterWrites(added=1)))

    def reset_counter(self) -> None:
        # pybreaker resets on every success: only a count that is not zero costs a write.
        if self._failures:
            self._failures = 0
            self._write(_Writes(failures=_CounterWrites(reset=True)))

    def increment_success_counter(self) -> None:
        self._successes += 1
        self._write(_Writes(successes=_CounterWrites(added=1)))

    def reset_success_counter(self) -> None:
        if self._successes:
            self._successes = 0
            self._write(_Writes(successes=_CounterWrites(reset=True)))

    @property
    def counter(self) -> int:
        return self._failures

    @property
    def success_counter(self) -> int:
        return self._successes

    @property
    def opened_at(self) -> datetime | None:
        return None if self._opened_at is None else datetime.fromtimestamp(self._opened_at, UTC)

    @opened_at.setter
    def opened_at(self, now: datetime) -> None:
        self._opened_at = int(now.timestamp())  # whole seconds, as pybreaker stores it
        self._write(_Writes(opened_at=self._opened_at))

    # --- the mirror --------------------------------------------------------------------

    def take_writes(self) -> _Writes:
        """The writes to send now; they are no longer pending (`restore_writes` if sending failed)."""
        writes, self._writes = self._writes, _Writes()
        return writes

    def restore_writes(self, writes: _Writes) -> None:
        """Put back writes that did not reach Redis, ahead of those made since."""
        self._writes = writes.then(self._writes)

    def queue(self, pipe: aioredis.client.Pipeline, writes: _Writes) -> None:
        """Queue `writes` on `pipe`, then the read of every field (so the read's reply comes last)."""
        state_key, failures_key, successes_key, opened_at_key = self.keys
        if writes.create_keys:
            pipe.setnx(failures_key, 0)
            pipe.setnx(successes_key, 0)
            pipe.setnx(state_key, pybreaker.STATE_CLOSED)
        if writes.opened_at is not None:
            pipe.eval(_SET_IF_GREATER, 1, opened_at_key, writes.opened_at)
        if writes.state is not None:
            pipe.set(state_key, writes.state)
        for key, counter in ((failures_key, writes.failures), (successes_key, writes.successes)):
            if counter.reset:
                pipe.set(key, 0)
            if counter.added:
                pipe.incrby(key, counter.added)
        pipe.mget(self.keys)

    def apply(self, values: Sequence[bytes | str | None]) -> None:
        """Take the fields just read from Redis, keeping the writes made since they were sent."""
        state, failures, successes, opened_at = values
        pending = self._writes
        if state is None and pending.state is None:  # Redis lost the keys: closed again, as pybreaker
            self._writes.create_keys = True
            self._wake()
        self._state = pending.state or (reply_text(state) if state is not None else pybreaker.STATE_CLOSED)
        self._failures = pending.failures.on(int(failures or 0))
        self._successes = pending.successes.on(int(successes or 0))
        self._opened_at = _latest(int(opened_at) if opened_at else None, pending.opened_at)

    def _write(self, writes: _Writes) -> None:
        self._writes = self._writes.then(writes)
        self._wake()


class Breakers:
    """One breaker per group; shared through `client` (Redis, asyncio), or per process without it.

    With a client, the sync task starts with the first running event loop that sees these
    breakers (at construction, or the first guarded call) and stops at `aclose`. With
    `sync_in_background` False there is no task: the owner calls `try_sync()` around its calls,
    for a client used so rarely that a round trip every `refresh_s` would cost more than them.
    """

    def __init__(
        self,
        settings: CircuitBreakerSettings,
        *,
        client: aioredis.Redis | None = None,
        namespace: str = "oe",
        refresh_s: float = 0.25,
        sync_timeout_s: float = 1.0,
        sync_in_background: bool = True,
    ) -> None:
        self._client = client
        self._sync_in_background = sync_in_background
        self._refresh_s = refresh_s
        self._sync_timeout_s = sync_timeout_s
        self._wake = asyncio.Event()
        self._round = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._redis_down = False
        self._storages: list[_MirroredStorage] = []
        self._breakers: dict[Group, pybreaker.CircuitBreaker] = {}
        for group in Group:
            storage: pybreaker.CircuitBreakerStorage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
            if client is not None:
                storage = _MirroredStorage(f"{namespace}:breaker:{group}", self._wake.set)
                self._storages.append(storage)
            self._breakers[group] = pybreaker.CircuitBreaker(
                fail_max=settings.failure_threshold,
                reset_timeout=settings.timeout,
                success_threshold=settings.max_requests,
                exclude=[lambda exc: not is_exchange_fault(exc)],
                state_storage=storage,
                name=str(group),
                throw_new_error_on_trip=False,
            )
        self._start_syncing()

    def state(self, group: Group) -> str:
        """ "closed", "open" or "half-open", as this process last knows it (no Redis round trip)."""
        self._start_syncing()
        return str(self._breakers[group].current_state)

    def publish_states(self) -> None:
        """Set every group's `order_execution_circuit_breaker_state` gauge (a scrape calls this; the
        shared state as of the last sync, at most `refresh_s` old while Redis answers)."""
        for group in self._breakers:
            metrics.breaker_state(str(group), self.state(group))

    @contextmanager
    def guard(self, group: Group) -> Iterator[None]:
        """Run the block through `group`'s breaker; raises CircuitOpen, without calling, while it is open.

        Never waits on Redis: state and counts are in memory, writes go out from the sync task.
        Each call also sets the group's state gauge.
        """
        self._start_syncing()
        breaker = self._breakers[group]
        try:
            with breaker.calling():
                yield
        except pybreaker.CircuitBreakerError as exc:
            raise CircuitOpen(f"circuit breaker {group} is open", group=str(group)) from exc
        finally:
            metrics.breaker_state(str(group), str(breaker.current_state))

    async def sync(self) -> None:
        """One round trip: send this process's pending writes, then read every group's shared state.

        Bounded by `sync_timeout_s`. Raises TimeoutError or a RedisError if Redis does not
        answer in time; the writes then stay pending for the next round. Without a client,
        returns at once. The sync task calls this; tests and `aclose` may too.
        """
        if self._client is None:
            return
        async with self._round:
            writes = [storage.take_writes() for storage in self._storages]
            try:
                async with asyncio.timeout(self._sync_timeout_s), self._client.pipeline() as pipe:
                    reads = []
                    for storage, pending in zip(self._storages, writes, strict=True):
                        storage.queue(pipe, pending)
                        reads.append(len(pipe) - 1)
                    replies = await pipe.execute()
            except BaseException:  # cancelled too: the writes must not be lost
                for storage, pending in zip(self._storages, writes, strict=True):
                    storage.restore_writes(pending)
                raise
            for storage, index in zip(self._storages, reads, strict=True):
                storage.apply(replies[index])

    async def aclose(self) -> None:
        """Stop the sync task and send the writes still pending (one round; a failure is logged)."""
        self._closed = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()  # a library may swallow it mid-round: the task also stops on `_closed`
            await asyncio.wait([task])  # not `await task`: our caller's own cancellation must propagate
        if self._client is None:
            return
        try:
            await self.sync()
        except Exception as exc:
            log.warning("circuit breakers: could not send the last state to Redis (%r)", exc)

    def _start_syncing(self) -> None:
        if not self._sync_in_background or self._client is None or self._closed:
            return
        if self._task is not None and not self._task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # built before the loop runs: the first guarded call starts it
            return
        self._task = loop.create_task(self._sync_forever(), name="circuit-breakers-sync")

    async def _sync_forever(self) -> None:
        """Sync at once when a breaker wrote, else every `refresh_s`; after a failed round wait
        `refresh_s` whatever is written, so an outage costs at most one attempt per period."""
        while not self._closed:
            self._wake.clear()
            if await self.try_sync():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._refresh_s):
                        await self._wake.wait()
            else:
                await asyncio.sleep(self._refresh_s)

    async def try_sync(self) -> bool:
        """`sync`, but a Redis that does not answer is logged (once per outage) and answered False:
        the breakers keep the last known shared state and hold this process's writes."""
        try:
            await self.sync()
        except Exception as exc:
            if not self._redis_down:  # once per outage, not four times a second
                self._redis_down = True
                log.warning(
                    "circuit breakers: Redis does not answer (%r); keeping the last known shared state "
                    "and holding this process's breaker writes until it does",
                    exc,
                )
            return False
        if self._redis_down:
            self._redis_down = False
            log.warning("circuit breakers: Redis answers again; breaker state in sync")
        return True


def _latest(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)
