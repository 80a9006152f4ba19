"""The chaos run's seed: given by CHAOS_SEED to replay a run, random otherwise, and named in the
line a failure ends with."""

from __future__ import annotations

import pytest

from tests.chaos.seed import chaos_seed, replay_note

pytestmark = pytest.mark.chaos


def test_chaos_seed_comes_from_the_environment_to_replay_a_run() -> None:
    assert chaos_seed({"CHAOS_SEED": "4242"}) == 4242
    assert chaos_seed({"CHAOS_SEED": " 17 "}) == 17


def test_without_chaos_seed_each_run_draws_its_own() -> None:
    seeds = {chaos_seed({}) for _ in range(20)} | {chaos_seed({"CHAOS_SEED": ""}) for _ in range(20)}
    assert all(1 <= s < 1_000_000 for s in seeds)
    assert len(seeds) > 1  # 40 draws from 999,999 values: all equal would mean no randomness


def test_a_bad_chaos_seed_is_refused_naming_the_variable() -> None:
    with pytest.raises(ValueError, match=r"CHAOS_SEED must be an integer, got 'abc'"):
        chaos_seed({"CHAOS_SEED": "abc"})


def test_the_replay_note_says_how_to_replay() -> None:
    assert replay_note(4242) == "chaos seed 4242: replay with CHAOS_SEED=4242 pytest -k chaos"
