"""User-stream news is applied in arrival order within one lane and concurrently across lanes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import pytest

from order_execution.listener.event_lanes import EventLanes


class Journal:
    """Work items that record when they start and finish, and how many run at once."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.finished: list[str] = []
        self.events: list[str] = []  # "+name" at start, "-name" at finish, in the order they happened
        self.running = 0
        self.most_at_once = 0

    def item(self, name: str, seconds: float = 0.02, fail: bool = False) -> Callable[[], Awaitable[None]]:
        async def work() -> None:
            self.started.append(name)
            self.events.append(f"+{name}")
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            try:
                await asyncio.sleep(seconds)
                if fail:
                    raise RuntimeError(f"{name} failed")
            finally:
                self.running -= 1
                self.finished.append(name)
                self.events.append(f"-{name}")

        return work


async def test_one_lane_runs_in_arrival_order_and_lanes_run_at_once() -> None:
    """Within a lane each item starts only after the one before it finished; the four lanes' items
    overlap (asserted by what ran at once, not by wall time, which a loaded machine stretches)."""
    lanes, journal = EventLanes(max_in_flight=64), Journal()
    for i in range(3):
        for order in ("a", "b", "c", "d"):
            await lanes.submit(order, journal.item(f"{order}{i}", seconds=0.05))
    await lanes.idle()
    for order in "abcd":
        in_lane = [e for e in journal.events if e[1] == order]
        assert in_lane == [f"{sign}{order}{i}" for i in range(3) for sign in "+-"]  # one after another
    assert journal.most_at_once == 4  # one per lane at once: three rounds, not twelve


async def test_submit_waits_for_room_so_nothing_piles_up() -> None:
    lanes, journal = EventLanes(max_in_flight=3), Journal()
    for i in range(9):
        await lanes.submit(f"order-{i}", journal.item(f"x{i}"))
        assert lanes.in_flight <= 3
    await lanes.idle()
    assert journal.most_at_once == 3 and len(journal.finished) == 9


async def test_a_failure_is_logged_and_the_lane_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    lanes, journal = EventLanes(max_in_flight=8), Journal()
    await lanes.submit("a", journal.item("a0", fail=True))
    await lanes.submit("a", journal.item("a1"))
    await lanes.idle()
    assert journal.finished == ["a0", "a1"]
    assert "a0 failed" in caplog.text


async def test_close_cancels_what_is_queued() -> None:
    lanes, journal = EventLanes(max_in_flight=8), Journal()
    await lanes.submit("a", journal.item("a0", seconds=10))
    await lanes.submit("a", journal.item("a1", seconds=10))
    await asyncio.wait_for(lanes.close(), 1)
    assert journal.started == ["a0"] and lanes.in_flight == 0
    await lanes.submit("a", journal.item("a2", seconds=0))  # usable again, with its room back
    await lanes.idle()
    assert journal.finished[-1] == "a2"


class Batches:
    """A lane runner that records each batch it is handed and holds each until released."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[str]]] = []
        self.gate = asyncio.Event()

    async def run(self, lane: str, items: Sequence[str]) -> None:
        self.batches.append((lane, list(items)))
        await self.gate.wait()


async def test_what_queues_on_a_busy_lane_is_handed_over_as_one_batch() -> None:
    """One worker per lane, not one task per item: what arrives together, or while the lane is
    busy, is one batch, in arrival order; other lanes are not held up."""
    runner = Batches()
    lanes: EventLanes[str] = EventLanes(runner.run, max_in_flight=64)
    tasks_before = len(asyncio.all_tasks())
    await lanes.submit("a", "a0")
    await lanes.submit("a", "a1")  # before the worker first ran: the same batch
    await lanes.submit("b", "b0")
    assert len(asyncio.all_tasks()) - tasks_before == 2  # a worker per lane
    await asyncio.sleep(0)
    for item in ("a2", "a3", "a4"):  # while lane a's first batch runs
        await lanes.submit("a", item)
    assert lanes.in_flight == 6 and len(asyncio.all_tasks()) - tasks_before == 2
    runner.gate.set()
    await lanes.idle()
    assert runner.batches == [("a", ["a0", "a1"]), ("b", ["b0"]), ("a", ["a2", "a3", "a4"])]
    assert lanes.in_flight == 0 and len(asyncio.all_tasks()) == tasks_before  # the workers ended
    await lanes.submit("a", "a5")  # a new worker for the lane
    await lanes.idle()
    assert runner.batches[-1] == ("a", ["a5"])


async def test_a_failed_batch_is_logged_and_the_lane_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    ran: list[list[str]] = []

    async def run(lane: str, items: Sequence[str]) -> None:
        ran.append(list(items))
        if "bad" in items:
            raise RuntimeError("batch failed")

    lanes: EventLanes[str] = EventLanes(run, max_in_flight=2)
    await lanes.submit("a", "bad")
    await asyncio.sleep(0)
    await lanes.submit("a", "good")
    await lanes.idle()
    assert ran == [["bad"], ["good"]] and lanes.in_flight == 0
    assert "batch failed" in caplog.text
