"""The seeded random walk that moves every symbol's reference price, and other periodic housekeeping."""

from __future__ import annotations

import asyncio
import random
from decimal import ROUND_HALF_EVEN, Decimal

from simulator.state import SimulatorState


def step_prices(state: SimulatorState, rng: random.Random) -> None:
    """Move every reference price by a Gaussian step of ``walk_step_bps`` basis points, kept on the tick."""
    engine = state.engine
    scale = float(state.config.walk_step_bps) / 10_000
    for symbol, spec in engine.specs.items():
        current = engine.prices[symbol]
        moved = current * Decimal(str(1 + rng.gauss(0.0, scale)))
        ticks = ((moved - spec.min_price) / spec.tick_size).to_integral_value(ROUND_HALF_EVEN)
        price = min(max(spec.min_price + ticks * spec.tick_size, spec.min_price), spec.max_price)
        if price != current:
            engine.set_price(symbol, price)


async def run_walk(state: SimulatorState) -> None:
    """Step prices every ``walk_interval_ms`` forever (returns at once if the interval is 0: frozen)."""
    interval_ms = state.config.walk_interval_ms
    if interval_ms <= 0:
        return
    rng = random.Random(state.config.seed)
    while True:
        await asyncio.sleep(interval_ms / 1000)
        step_prices(state, rng)


async def run_housekeeping(state: SimulatorState) -> None:
    """Expire listenKeys and GTD orders whose time has come, checking a few times per second."""
    period = min(0.25, state.config.scaled_seconds(state.config.listen_key_ttl_s) / 10)
    while True:
        await asyncio.sleep(period)
        state.streams.expire_due()
        state.engine.expire_due(state.clock.now_ms())
