"""What a /health check is (gateway/health.py): an async callable answering a message, or a
`Detailed` answer with entries, or raising to say why it is unhealthy; and `CachedProbe`, which
reuses a costly probe's answer for a while."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Detailed:
    """A check's answer with entries shown beside its message (`entries`, merged into the check's
    object); `healthy` False makes the check unhealthy, its entries still shown."""

    message: str
    entries: Mapping[str, object]
    healthy: bool = True


Check = Callable[[], Awaitable[str | Detailed]]
Probe = Callable[[], Awaitable[str]]


class CachedProbe:
    """Runs `probe` at most once per `ttl_s`; concurrent callers share one run. A failure is cached too."""

    def __init__(self, probe: Probe, ttl_s: float) -> None:
        self._probe = probe
        self._ttl_s = ttl_s
        self._lock = asyncio.Lock()
        self._at = float("-inf")
        self._result: str | BaseException = ""

    async def __call__(self) -> str:
        async with self._lock:
            if time.monotonic() - self._at >= self._ttl_s:
                try:
                    self._result = await self._probe()
                except Exception as exc:
                    self._result = exc
                self._at = time.monotonic()
        if isinstance(self._result, BaseException):
            raise self._result
        return self._result
