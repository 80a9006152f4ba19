"""The seeded random walk of reference prices."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal
from typing import Any

from sim_helpers import new_account
from usdm_simulator.config import SimulatorConfig
from usdm_simulator.state import SimulatorState
from usdm_simulator.walk import step_prices


def _walk(seed: int, steps: int) -> dict[str, Decimal]:
    state = SimulatorState.build(
        SimulatorConfig(accounts=[new_account()], seed=seed, walk_step_bps=Decimal(20))
    )
    rng = random.Random(seed)
    for _ in range(steps):
        step_prices(state, rng)
    return dict(state.engine.prices)


def test_walk_is_seeded_and_stays_on_tick() -> None:
    a, b, c = _walk(5, 50), _walk(5, 50), _walk(6, 50)
    assert a == b and a != c
    assert a["BTCUSDT"] != Decimal(50000)
    assert (a["BTCUSDT"] - Decimal("556.80")) % Decimal("0.10") == 0
    assert (a["XRPUSDT"] - Decimal("0.0143")) % Decimal("0.0001") == 0


async def test_walking_price_fills_resting_orders(make_sim: Any) -> None:
    sim = await make_sim(walk_interval_ms=10, walk_step_bps=Decimal(30), seed=3)
    first = (await sim.admin_get("prices"))["BTCUSDT"]["price"]
    await sim.order(side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.010", price="49999.9")
    await sim.order(side="SELL", type="LIMIT", timeInForce="GTC", quantity="0.010", price="50000.1")
    for _ in range(300):
        await asyncio.sleep(0.01)
        orders = await sim.admin_get("orders", status="FILLED")
        if orders:
            break
    assert orders, "the walk should have crossed one of the two orders"
    assert (await sim.admin_get("prices"))["BTCUSDT"]["price"] != first
