"""Faults on demand: armed per endpoint, firing by probability or for the next N calls.

REST kinds are consulted by the request pipeline once per call (``draw``); user-stream kinds are consulted
by the user-data stream once per event; ``clock_offset_ms`` shifts the exchange clock while armed.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from usdm_simulator.clock import ExchangeClock
from usdm_simulator.config import FaultConfig

USER_STREAM_KINDS = frozenset({"user_stream_silent", "user_stream_drop"})
# Faults that decide the reply without running the handler.
PRE_KINDS = frozenset(
    {
        "http_500",
        "http_502",
        "http_503_unavailable",
        "throttled_1008",
        "waf_403",
        "unknown_error_not_executed",
    }
)
# Faults that run the handler (the order is executed) and then replace or drop the reply.
POST_KINDS = frozenset({"unknown_error_executed", "drop_after_accept"})


@dataclass
class ArmedFault:
    """A fault in force: its settings, an id, and how many more times it may fire (None = unlimited)."""

    fault_id: int
    spec: FaultConfig
    remaining: int | None
    fired: int = 0

    def to_json(self) -> dict[str, object]:
        """Render for ``GET /admin/faults``."""
        return {
            "id": self.fault_id,
            **self.spec.model_dump(),
            "remaining": self.remaining,
            "fired": self.fired,
        }


class FaultRegistry:
    """The armed faults; deterministic for a given seed."""

    def __init__(self, clock: ExchangeClock, seed: int, endpoints: frozenset[str] = frozenset()) -> None:
        """``endpoints`` are the valid ``"METHOD /path"`` names; when given, arming another name fails."""
        self._clock = clock
        self._endpoints = endpoints
        self._rng = random.Random(seed)
        self._ids = itertools.count(1)
        self._armed: list[ArmedFault] = []

    def arm(self, spec: FaultConfig) -> ArmedFault:
        """Arm ``spec`` and return it; a ``clock_offset_ms`` fault shifts the clock at once.

        Raises ValueError for an endpoint the simulator does not serve (a typo would never fire).
        """
        rest_kind = spec.kind not in USER_STREAM_KINDS and spec.kind != "clock_offset_ms"
        if rest_kind and self._endpoints and spec.endpoint != "*" and spec.endpoint not in self._endpoints:
            raise ValueError(
                f"unknown endpoint {spec.endpoint!r}; use '*' or one of {sorted(self._endpoints)}"
            )
        fault = ArmedFault(next(self._ids), spec, spec.count)
        self._armed.append(fault)
        if spec.kind == "clock_offset_ms":
            self._apply_clock()
        return fault

    def clear(self) -> None:
        """Disarm every fault and restore the clock."""
        self._armed.clear()
        self._apply_clock()

    def listing(self) -> list[ArmedFault]:
        """Return the armed faults, oldest first."""
        return list(self._armed)

    def draw(self, endpoint: str, kinds: frozenset[str] | None = None) -> list[FaultConfig]:
        """Return the faults that fire for one call of ``endpoint`` (``"METHOD /path"``), spending counts.

        ``kinds`` restricts which fault kinds are considered (the others are left untouched).
        """
        fired: list[FaultConfig] = []
        for fault in list(self._armed):
            spec = fault.spec
            if spec.kind == "clock_offset_ms" or (kinds is not None and spec.kind not in kinds):
                continue
            if spec.kind not in USER_STREAM_KINDS and spec.endpoint not in ("*", endpoint):
                continue
            if fault.remaining is None and self._rng.random() >= spec.probability:
                continue
            fault.fired += 1
            fired.append(spec)
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._armed.remove(fault)
        return fired

    def _apply_clock(self) -> None:
        self._clock.offset_ms = sum(f.spec.offset_ms for f in self._armed if f.spec.kind == "clock_offset_ms")
