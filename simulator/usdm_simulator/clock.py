"""The exchange clock: the simulator's one notion of "now", in Unix milliseconds.

Simulated time starts at wall time when the clock is built and runs ``time_scale`` times as fast as the
wall clock (1 by default: simulated time is wall time). ``advance(ms)`` jumps it forward (the admin API's
``POST /admin/clock``). ``offset_ms`` is the ``clock_offset_ms`` fault: it skews the time the exchange
*reports* (``now_ms``, ``/fapi/v1/time``, the -1021 check) but not the schedule (``sim_ms``: funding times,
listenKey deadlines, the 24 h connection cap), so a skewed clock does not expire keys.

``wall_ms`` is wall time plus the fault offset: what a client with a correct local clock believes the
exchange's time is. While simulated time runs ahead of wall time the request pipeline accepts a signed
timestamp that is valid against either reference (see ``usdm_simulator.pipeline``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

WallClock = Callable[[], int]


def _wall_ns() -> int:
    return time.time_ns()


class ExchangeClock:
    """Simulated exchange time: wall time scaled by ``time_scale``, plus jumps, plus the fault offset."""

    def __init__(self, time_scale: float = 1.0, wall_ns: WallClock = _wall_ns) -> None:
        """``time_scale`` is exchange seconds per wall second (> 0); ``wall_ns`` reads the wall clock."""
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.offset_ms = 0
        self.time_scale = time_scale
        self._wall_ns = wall_ns
        self._origin_ns = wall_ns()
        self._advanced_ms = 0
        self._listeners: list[Callable[[], None]] = []

    def sim_ms(self) -> int:
        """Simulated Unix milliseconds without the fault offset (the schedule's time)."""
        now_ns = self._wall_ns()
        if self.time_scale == 1.0:
            elapsed_ns = now_ns - self._origin_ns
        else:
            elapsed_ns = int((now_ns - self._origin_ns) * self.time_scale)
        return (self._origin_ns + elapsed_ns) // 1_000_000 + self._advanced_ms

    def now_ms(self) -> int:
        """The exchange's current time in Unix milliseconds, as ``/fapi/v1/time`` reports it."""
        return self.sim_ms() + self.offset_ms

    def wall_ms(self) -> int:
        """Wall-clock Unix milliseconds plus the fault offset (the time a well-synced client sends)."""
        return self._wall_ns() // 1_000_000 + self.offset_ms

    @property
    def advanced_ms(self) -> int:
        """Total milliseconds ``advance`` has added."""
        return self._advanced_ms

    def advance(self, ms: int) -> int:
        """Jump simulated time forward by ``ms`` (>= 0), run the on-advance hooks; return the new ``now_ms``.

        Raises ValueError for a negative ``ms``: the exchange clock never goes back.
        """
        if ms < 0:
            raise ValueError("advance_ms must be >= 0: the exchange clock never goes back")
        self._advanced_ms += ms
        for hook in list(self._listeners):
            hook()
        return self.now_ms()

    def on_advance(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` after every ``advance`` (housekeeping: funding, listenKey expiry, 24 h cap)."""
        self._listeners.append(hook)

    def wall_seconds(self, exchange_seconds: float) -> float:
        """Convert an exchange duration to wall seconds (divide by ``time_scale``)."""
        return exchange_seconds / self.time_scale
