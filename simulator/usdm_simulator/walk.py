"""What moves the reference prices: the seeded random walk, or a recorded series replayed for the
symbols configured with ``replay``; and other periodic housekeeping."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Collection
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

from usdm_simulator.replay import ReplayFileError, iter_points
from usdm_simulator.state import SimulatorState
from usdm_simulator.symbols import SymbolSpec

_log = logging.getLogger(__name__)


def snap_to_tick(spec: SymbolSpec, price: Decimal) -> Decimal:
    """``price`` rounded (half even) to the symbol's tick and kept within its min/max price."""
    ticks = ((price - spec.min_price) / spec.tick_size).to_integral_value(ROUND_HALF_EVEN)
    return min(max(spec.min_price + ticks * spec.tick_size, spec.min_price), spec.max_price)


def step_prices(state: SimulatorState, rng: random.Random, skip: Collection[str] = ()) -> None:
    """Move every reference price but those in ``skip`` by a Gaussian step of ``walk_step_bps`` basis
    points, kept on the tick."""
    engine = state.engine
    scale = float(state.config.walk_step_bps) / 10_000
    for symbol, spec in engine.specs.items():
        if symbol in skip:
            continue
        current = engine.prices[symbol]
        price = snap_to_tick(spec, current * Decimal(str(1 + rng.gauss(0.0, scale))))
        if price != current:
            engine.set_price(symbol, price)


async def replay_prices(state: SimulatorState, symbol: str, path: Path, speed: float) -> None:
    """Set ``symbol``'s reference price to each point of the series in ``path``, the first at once and
    each next one after its recorded delay divided by ``speed``; a point at the current price (after
    snapping to the tick) is skipped. Returns at the end of the series; a file that turns bad mid-way
    (changed since start-up) is logged and ends the replay there."""
    spec = state.engine.specs[symbol]
    loop = asyncio.get_running_loop()
    started = loop.time()
    first_ms: int | None = None
    try:
        for point in iter_points(path):
            if first_ms is None:
                first_ms = point.time_ms
            due = started + (point.time_ms - first_ms) / 1000 / speed
            await asyncio.sleep(max(0.0, due - loop.time()))
            price = snap_to_tick(spec, point.price)
            if price != state.engine.prices[symbol]:
                state.engine.set_price(symbol, price)
    except ReplayFileError as exc:
        _log.error("replay of %s stopped: %s", symbol, exc)


async def run_walk(state: SimulatorState) -> None:
    """Replay the configured series and step the other prices every ``walk_interval_ms``, forever.

    A replayed symbol joins the walk from its last price when its series ends. With an interval of 0
    (frozen) only the replays run, and this returns when they end (at once if there are none).
    """
    replaying = set(state.config.replay)
    tasks = [
        asyncio.create_task(replay_prices(state, s, p, state.config.replay_speed))
        for s, p in state.config.replay.items()
    ]
    for task, symbol in zip(tasks, state.config.replay, strict=True):
        task.add_done_callback(_discard(replaying, symbol))
    try:
        interval_ms = state.config.walk_interval_ms
        if interval_ms <= 0:
            await asyncio.gather(*tasks)
            return
        rng = random.Random(state.config.seed)
        while True:
            await asyncio.sleep(interval_ms / 1000)
            step_prices(state, rng, replaying)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _discard(replaying: set[str], symbol: str) -> Callable[[asyncio.Task[None]], None]:
    return lambda _task: replaying.discard(symbol)


async def run_housekeeping(state: SimulatorState) -> None:
    """Expire listenKeys and GTD orders whose time has come, checking a few times per second."""
    period = min(0.25, state.config.scaled_seconds(state.config.listen_key_ttl_s) / 10)
    while True:
        await asyncio.sleep(period)
        state.streams.expire_due()
        state.engine.expire_due(state.clock.now_ms())
