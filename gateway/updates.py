"""Fan-out of order updates from NATS to the gateway's gRPC streams.

The gateway holds one NATS subscription. Each StreamOrderUpdates call registers a
bounded queue with its symbol filter; a stream that falls `max_backlog` updates behind
is closed with RESOURCE_EXHAUSTED rather than slowing every other stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from orders.model import Order


class SlowSubscriber(Exception):
    """The stream's reader fell too far behind and was dropped."""


class _Subscriber:
    def __init__(self, symbols: frozenset[str], max_backlog: int) -> None:
        self.symbols = symbols
        self.queue: asyncio.Queue[Order | None] = asyncio.Queue(maxsize=max_backlog)
        self.overflowed = False

    def offer(self, order: Order) -> None:
        if self.symbols and order.symbol not in self.symbols:
            return
        try:
            self.queue.put_nowait(order)
        except asyncio.QueueFull:
            self.overflowed = True
            self.queue.get_nowait()
            self.queue.put_nowait(None)  # wakes the reader, which then raises SlowSubscriber


class UpdateHub:
    """Distributes updates to every registered stream whose filter matches."""

    def __init__(self, *, max_backlog: int = 10_000) -> None:
        self._subscribers: set[_Subscriber] = set()
        self._max_backlog = max_backlog

    async def publish(self, order: Order) -> None:
        for subscriber in tuple(self._subscribers):
            subscriber.offer(order)

    @asynccontextmanager
    async def subscribe(self, symbols: Iterable[str]) -> AsyncIterator[AsyncIterator[Order]]:
        """Register a stream for `symbols` (empty = all) for the duration of the block."""
        subscriber = _Subscriber(frozenset(symbols), self._max_backlog)
        self._subscribers.add(subscriber)
        try:
            yield self._iterate(subscriber)
        finally:
            self._subscribers.discard(subscriber)

    @staticmethod
    async def _iterate(subscriber: _Subscriber) -> AsyncIterator[Order]:
        while True:
            order = await subscriber.queue.get()
            if order is None or subscriber.overflowed:
                raise SlowSubscriber(f"stream fell more than {subscriber.queue.maxsize} updates behind")
            yield order
