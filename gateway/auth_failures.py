"""Failed authentications: counted, logged at a bounded rate, and answered late.

Every call refused for a missing or wrong API key counts in
`order_execution_auth_failures_total{reason}`. The log gets at most one line per reason per
second, which says how many failures since the previous line went unlogged, so a flood of
bad keys cannot flood the log. The refusal is answered only after `auth.failure_delay_ms`,
which slows a guesser down; the wait is a timer on the event loop (no thread, nothing
blocked), and at most `auth.max_delayed_failures` calls wait at once: beyond that a failure
is answered at once, so a flood cannot pile up waiting calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from order_execution.gateway import metrics

log = logging.getLogger(__name__)

LOG_INTERVAL_S = 1.0  # one log line per reason per this long, at most


@dataclass
class _ReasonLog:
    next_line_at: float = 0.0
    unlogged: int = 0


class AuthFailures:
    """The count, the log and the delay of refused authentications, for one gateway."""

    def __init__(
        self, *, delay_ms: int, max_delayed: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._delay_s = delay_ms / 1000
        self._max_delayed = max_delayed
        self._clock = clock
        self._delayed = 0
        self._logs = {reason: _ReasonLog() for reason in metrics.AUTH_FAILURE_REASONS}

    @property
    def waiting(self) -> int:
        """Refused calls waiting out the delay now."""
        return self._delayed

    def record(self, reason: str, peer: str = "") -> None:
        """Count a refusal for `reason` (one of `metrics.AUTH_FAILURE_REASONS`) and log it, unless
        a line for that reason was logged less than `LOG_INTERVAL_S` ago (then it is tallied for
        the next line)."""
        metrics.AUTH_FAILURES.labels(reason).inc()
        state = self._logs[reason]
        now = self._clock()
        if now < state.next_line_at:
            state.unlogged += 1
            return
        unlogged = f"; {state.unlogged} more since the last line, not logged" if state.unlogged else ""
        log.warning("authentication refused (%s)%s%s", reason, f" from {peer}" if peer else "", unlogged)
        state.next_line_at = now + LOG_INTERVAL_S
        state.unlogged = 0

    async def delay(self) -> None:
        """Wait `auth.failure_delay_ms` before the refusal is answered; returns at once when
        `auth.max_delayed_failures` refusals are already waiting."""
        if self._delay_s <= 0 or self._delayed >= self._max_delayed:
            return
        self._delayed += 1
        try:
            await asyncio.sleep(self._delay_s)
        finally:
            self._delayed -= 1
