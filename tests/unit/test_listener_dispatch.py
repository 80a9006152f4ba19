"""How the listener hands user-stream news to its lanes: order events per order, positions in batches."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from order_execution.exchange.user_stream import OrderEvent
from order_execution.listener.account_lead import AccountLead
from order_execution.listener.process import Listener
from order_execution.orders.fsm import ExchangeReport
from order_execution.orders.model import OrderState
from order_execution.runtime.settings import Settings


@pytest.fixture
def listener() -> AccountLead:
    """The account `default` of a replica built outside the event loop: nothing it holds
    connects until it leads."""
    return Listener(Settings(redis={"address": "127.0.0.1:1"})).leads["default"]  # and nothing could


def account_update(symbol: str, amount: str) -> dict[str, object]:
    return {"e": "ACCOUNT_UPDATE", "a": {"P": [{"s": symbol, "pa": amount, "ps": "BOTH"}]}}


async def test_positions_of_many_updates_go_out_in_one_queued_write(
    listener: AccountLead, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[dict[str, Decimal]] = []
    release = asyncio.Event()

    async def set_positions(positions: dict[str, Decimal], *, replace: bool = False) -> None:
        await release.wait()
        written.append(positions)

    monkeypatch.setattr(listener.risk_state, "set_positions", set_positions)
    await listener._on_account_update(account_update("BTCUSDT", "0.1"))  # its write starts, and waits
    await asyncio.sleep(0)
    for amount in ("0.2", "0.3", "0.4"):  # noted meanwhile: one more write, queued behind it
        await listener._on_account_update(account_update("ETHUSDT", amount))
    assert listener.lanes.in_flight == 2
    release.set()
    await listener.lanes.idle()
    assert written == [{"BTCUSDT": Decimal("0.1")}, {"ETHUSDT": Decimal("0.4")}]


async def test_stepping_down_drops_a_queued_write_without_blocking_the_next_one(
    listener: AccountLead, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[dict[str, Decimal]] = []

    async def set_positions(positions: dict[str, Decimal], *, replace: bool = False) -> None:
        written.append(positions)

    monkeypatch.setattr(listener.risk_state, "set_positions", set_positions)
    listener.risk_feeds.note_account_update(account_update("BTCUSDT", "1"))
    never = asyncio.Event()

    async def busy() -> None:
        await never.wait()

    await listener.lanes.submit("someone", busy)  # keeps the lanes busy
    await listener._on_account_update(account_update("BTCUSDT", "2"))
    await listener.stop()  # cancels both, as when the lease is lost
    await listener._on_account_update(account_update("BTCUSDT", "3"))  # leading again later
    await listener.lanes.idle()
    assert written == [{"BTCUSDT": Decimal("3")}]


async def test_order_events_run_per_order_and_conditional_ones_at_once(
    listener: AccountLead, monkeypatch: pytest.MonkeyPatch
) -> None:
    applied: list[str] = []
    gate = asyncio.Event()

    async def record(event: OrderEvent) -> None:
        if event.client_order_id == "slow":
            await gate.wait()
        applied.append(event.client_order_id)

    monkeypatch.setattr(listener.recorder, "record", record)
    report = ExchangeReport(OrderState.SUBMITTED, Decimal(0), Decimal(0), "1")
    await listener._on_order_event(OrderEvent("slow", "BTCUSDT", report, 1))
    await listener._on_order_event(OrderEvent("fast", "BTCUSDT", report, 2))
    await listener._on_order_event(OrderEvent("algo", "BTCUSDT", report, 3, conditional=True))
    assert "algo" in applied  # the conditional one was applied inline, before the call returned
    await asyncio.sleep(0.01)
    assert sorted(applied) == ["algo", "fast"]  # another order's news did not wait for the slow one
    gate.set()
    await listener.lanes.idle()
    assert applied[-1] == "slow"
