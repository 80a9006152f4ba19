"""The gateway's in-memory copy of exchange trading rules, refreshed from Redis."""

from __future__ import annotations

import asyncio
import logging
import time

from order_execution.orders.rules import SymbolRules
from order_execution.orders.rules_store import RulesStore

log = logging.getLogger(__name__)

_MISS_RELOAD_INTERVAL_S = 1.0


class RulesCache:
    """Rules by symbol; `current` never touches Redis, `reload_on_miss` at most once a second."""

    def __init__(self, store: RulesStore, *, refresh_s: float = 5.0) -> None:
        self._store = store
        self._refresh_s = refresh_s
        self.current: dict[str, SymbolRules] = {}
        self._last_load = 0.0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def load(self) -> None:
        self.current = await self._store.load()
        self._last_load = time.monotonic()

    async def reload_on_miss(self) -> None:
        """Reload now unless a load happened within the last second (a worker may have just stored them)."""
        if time.monotonic() - self._last_load >= _MISS_RELOAD_INTERVAL_S:
            await self.load()

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._refresh_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._stopping = True  # a cancel swallowed inside redis-py: the loop ends on the flag
            self._task.cancel()

    async def _refresh_forever(self) -> None:
        while not self._stopping:
            try:
                await self.load()
            except Exception as exc:
                log.warning("loading trading rules from Redis failed (%r); keeping the previous ones", exc)
            await asyncio.sleep(self._refresh_s)
