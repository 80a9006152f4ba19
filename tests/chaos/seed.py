"""The chaos run's seed: drawn at random for each run unless `CHAOS_SEED` gives it.

One seed drives everything random in a run (the order plan, the chaos schedule, the
simulator's faults and price walk), so `CHAOS_SEED=<seed> pytest -k chaos` replays a run's
plan and schedule; the timing of processes still differs from run to run. The test prints the
seed when it starts, and a failure's message carries it (tests/chaos/conftest.py).
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping

SEED_VARIABLE = "CHAOS_SEED"


def chaos_seed(environ: Mapping[str, str]) -> int:
    """`CHAOS_SEED` from `environ` if set (an integer; ValueError naming the variable otherwise),
    else a fresh random seed in 1..999,999."""
    given = environ.get(SEED_VARIABLE, "").strip()
    if not given:
        return random.SystemRandom().randrange(1, 1_000_000)
    try:
        return int(given)
    except ValueError:
        raise ValueError(f"{SEED_VARIABLE} must be an integer, got {given!r}") from None


def replay_note(seed: int) -> str:
    """The line that says how to replay a run with `seed`."""
    return f"chaos seed {seed}: replay with {SEED_VARIABLE}={seed} pytest -k chaos"


SEED = chaos_seed(os.environ)
