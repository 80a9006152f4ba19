"""Lanes for the user stream's news: in arrival order within one lane, lanes at once.

Applying an event takes a Redis round trip or two. One event after another, the listener
fell behind once the account traded a couple of hundred orders a second, and the fills of
every order then landed in the store seconds after the exchange reported them. Here each
event is queued on its lane and the stream goes on reading: a lane runs its events one after
another in the order they arrived, different lanes run at once, up to `max_in_flight` events
in all (the stream then waits for room, so nothing piles up in memory).

A task a lane runs is on its own: its failure is logged and the lane goes on with the next.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class EventLanes:
    """Runs queued work per lane key; see the module docstring."""

    def __init__(self, *, max_in_flight: int) -> None:
        self._room = asyncio.Semaphore(max_in_flight)
        self._tails: dict[str, asyncio.Task[None]] = {}  # each lane's last task
        self._running: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._running)

    async def submit(self, lane: str, work: Callable[[], Awaitable[None]]) -> None:
        """Queue `work` behind everything queued on `lane`; waits only while `max_in_flight` are queued."""
        await self._room.acquire()
        task = asyncio.create_task(self._after(self._tails.get(lane), work))
        self._tails[lane] = task
        self._running.add(task)
        task.add_done_callback(lambda done: self._finished(lane, done))

    async def idle(self) -> None:
        """Until everything queued so far has run."""
        while self._running:
            await asyncio.wait(set(self._running))

    async def close(self) -> None:
        """Cancel everything queued and wait for it to unwind."""
        for task in self._running:
            task.cancel()
        await self.idle()

    @staticmethod
    async def _after(previous: asyncio.Task[None] | None, work: Callable[[], Awaitable[None]]) -> None:
        if previous is not None:
            await asyncio.wait({previous})  # its outcome is its own; only its end matters here
        await work()

    def _finished(self, lane: str, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._room.release()
        if self._tails.get(lane) is task:
            del self._tails[lane]
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("user-stream lane %s: %r", lane, exc, exc_info=exc)
