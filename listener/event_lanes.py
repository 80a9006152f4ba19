"""Lanes for the user stream's news: in arrival order within one lane, lanes at once.

Applying an event takes a Redis round trip or two. One event after another, the listener
fell behind once the account traded a couple of hundred orders a second, and the fills of
every order then landed in the store seconds after the exchange reported them. Here each
item is queued on its lane and the stream goes on reading: a lane runs its items one after
another in the order they arrived, different lanes run at once, up to `max_in_flight` items
queued or running in all (the stream then waits for room, so nothing piles up in memory).

A lane with queued items has one worker task, which takes everything queued on the lane at
once and hands it to `run` as one batch, then the next batch, until the lane is empty. So the
news that arrives together (an order's NEW, its trade) wakes one task, not one per event,
and `run` can serve a batch in one go (the listener looks up all the events of a batch in one
round trip). The default `run` runs items that are coroutine functions, one after another.

A batch that fails is logged and the lane goes on with the next (the default `run` logs each
item's failure on its own and goes on with the next item).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar, cast, overload

log = logging.getLogger(__name__)

T = TypeVar("T")
Work = Callable[[], Awaitable[None]]


async def run_each(lane: str, works: Sequence[Work]) -> None:
    """Run `works` one after another; a failure is logged and the next one runs."""
    for work in works:
        try:
            await work()
        except Exception as exc:
            log.error("user-stream lane %s: %r", lane, exc, exc_info=exc)


class EventLanes(Generic[T]):
    """Runs queued items per lane key, batch by batch; see the module docstring.

    `run(lane, items)` serves one batch of a lane (default: `run_each`, for items that are
    coroutine functions).
    """

    @overload
    def __init__(self: EventLanes[Work], run: None = None, *, max_in_flight: int) -> None: ...

    @overload
    def __init__(self, run: Callable[[str, Sequence[T]], Awaitable[None]], *, max_in_flight: int) -> None: ...

    def __init__(
        self,
        run: Callable[[str, Sequence[T]], Awaitable[None]] | None = None,
        *,
        max_in_flight: int,
    ) -> None:
        self._run = run if run is not None else cast(Callable[[str, Sequence[T]], Awaitable[None]], run_each)
        self._room = asyncio.Semaphore(max_in_flight)
        self._queued: dict[str, list[T]] = {}  # a lane with a worker -> what waits for its next batch
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Items queued or running."""
        return self._in_flight

    async def submit(self, lane: str, item: T) -> None:
        """Queue `item` behind everything queued on `lane`; waits only while `max_in_flight` are queued."""
        await self._room.acquire()
        self._in_flight += 1
        queued = self._queued.get(lane)
        if queued is not None:
            queued.append(item)  # the lane's worker takes it with its next batch
            return
        self._queued[lane] = [item]
        worker = asyncio.create_task(self._work(lane), name=f"user-stream lane {lane}")
        self._workers[lane] = worker
        worker.add_done_callback(lambda done: self._ended(lane, done))

    async def idle(self) -> None:
        """Until everything queued so far has run."""
        while self._workers:
            await asyncio.wait(set(self._workers.values()))

    async def close(self) -> None:
        """Cancel everything queued and wait for it to unwind."""
        for worker in self._workers.values():
            worker.cancel()
        await self.idle()

    async def _work(self, lane: str) -> None:
        while True:
            batch = self._queued[lane]
            if not batch:
                # Ends here, with no await between the check and the removal: an item submitted
                # from now on starts a new worker.
                del self._queued[lane], self._workers[lane]
                return
            self._queued[lane] = []
            try:
                await self._run(lane, batch)
            except Exception as exc:
                log.error("user-stream lane %s: %r", lane, exc, exc_info=exc)
            finally:
                self._release(len(batch))

    def _ended(self, lane: str, worker: asyncio.Task[None]) -> None:
        """A worker canceled (perhaps before it started): what it had queued goes with it."""
        if self._workers.get(lane) is worker:
            del self._workers[lane]
            self._release(len(self._queued.pop(lane, [])))

    def _release(self, items: int) -> None:
        self._in_flight -= items
        for _ in range(items):
            self._room.release()
