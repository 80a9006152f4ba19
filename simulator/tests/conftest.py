from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from sim_helpers import Sim, start_sim, stop_sim


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    s = await start_sim()
    yield s
    await stop_sim(s)


@pytest.fixture
async def book_sim() -> AsyncIterator[Sim]:
    """A simulator in its default order-book matching (``sim`` uses the reference price)."""
    s = await start_sim(matching="book")
    yield s
    await stop_sim(s)


@pytest.fixture
async def make_sim() -> AsyncIterator[Callable[..., Awaitable[Sim]]]:
    started: list[Sim] = []

    async def factory(**overrides: Any) -> Sim:
        s = await start_sim(**overrides)
        started.append(s)
        return s

    yield factory
    for s in started:
        await stop_sim(s)
