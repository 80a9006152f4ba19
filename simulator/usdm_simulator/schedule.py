"""Work that falls due on the simulated clock: funding, listenKey expiry, the 24 h connection cap, GTD.

``tick`` runs it once; ``run_schedule`` runs it a few times per wall second (more often when simulated
time runs fast), and ``POST /admin/clock`` runs it right after a jump, so a test that advances the clock
sees the consequences before the admin call returns.
"""

from __future__ import annotations

import asyncio

from usdm_simulator.state import SimulatorState


def tick(state: SimulatorState) -> None:
    """Settle due funding, expire due listenKeys, close 24 h-old connections, expire due GTD orders."""
    state.funding.settle_due()
    state.streams.expire_due()
    state.streams.close_aged()
    state.engine.expire_due(state.clock.now_ms())


def schedule_period_s(state: SimulatorState) -> float:
    """Wall seconds between ticks: 0.25, or one simulated minute when that is shorter (at least 20 ms)."""
    return max(0.02, min(0.25, state.clock.wall_seconds(60.0)))


async def run_schedule(state: SimulatorState) -> None:
    """Call ``tick`` forever, every ``schedule_period_s``."""
    period = schedule_period_s(state)
    while True:
        await asyncio.sleep(period)
        tick(state)
