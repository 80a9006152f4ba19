"""A failing chaos test names its seed in the failure itself, so the run can be replayed."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from tests.chaos.seed import SEED, replay_note


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Add the replay note to the exception of a failed chaos run (in its setup, call or teardown)
    before its report is made: pytest shows an exception's notes under its message. Skips are
    left alone."""
    excinfo = call.excinfo
    if (
        excinfo is not None
        and "cluster" in getattr(item, "fixturenames", ())  # the chaos run, not its checker's tests
        and not excinfo.errisinstance(pytest.skip.Exception)
        and replay_note(SEED) not in getattr(excinfo.value, "__notes__", ())
    ):
        excinfo.value.add_note(replay_note(SEED))
    return (yield)
