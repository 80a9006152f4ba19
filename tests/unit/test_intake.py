"""The intake (`gateway.handlers.Intake`): each command checked, charged once as its kind, then handled.

Admission's client rate is applied in one place, the intake's entry: writes cost a request,
reads `admission.read_cost`, a batch each of its items; a command whose text breaks a bound is
refused before it is charged (its user_id may be the rate's key). A recording Admission
(fakeredis store, no budget) notes each charge and refuses nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest

import order_execution.gateway.validation as gateway_validation
from order_execution.gateway.admission import Admission
from order_execution.gateway.auth import Caller
from order_execution.gateway.commands import (
    AmendOrder,
    CancelAll,
    CancelOrder,
    Command,
    GetOrder,
    ListOrders,
    PlaceBatch,
    PlaceOrder,
    Requester,
    WatchOrders,
)
from order_execution.gateway.handlers import Intake
from order_execution.gateway.rules_cache import RulesCache
from order_execution.orders.errors import InvalidOrder, OrderNotAmendable
from order_execution.orders.model import OrderType, Side, TimeInForce
from order_execution.orders.rules_store import RulesStore
from order_execution.orders.store import CreateResult, OrderStore
from order_execution.runtime.settings import AdmissionSettings, RiskSettings
from tests.factories import BTC_RULES

PEER = "10.0.0.7"


class RecordingAdmission(Admission):
    """Admission that records each client-rate charge as (client, "write" or "read")."""

    def __init__(self, store: OrderStore) -> None:
        super().__init__(store=store, settings=AdmissionSettings(), max_order_age_ms=5000)
        self.charges: list[tuple[str, str]] = []

    def check_client(
        self, client: str, *, rate: float | None = None, burst: int | None = None, read: bool = False
    ) -> None:
        self.charges.append((client, "read" if read else "write"))


def place(client_order_id: str, **changes: Any) -> PlaceOrder:
    fields: dict[str, Any] = {
        "symbol": "BTCUSDT",
        "side": Side.BUY,
        "type": OrderType.LIMIT,
        "quantity": "0.002",
        "price": "50000.0",
        "time_in_force": TimeInForce.GTC,
        "client_order_id": client_order_id,
    }
    return PlaceOrder(**{**fields, **changes})


@pytest.fixture
async def intake() -> AsyncIterator[Intake]:
    client = fakeredis.FakeAsyncRedis()
    rules_store = RulesStore(client)
    await rules_store.save([BTC_RULES])
    rules = RulesCache(rules_store)
    await rules.load()
    store = OrderStore(client)
    yield Intake(store, rules, RiskSettings(allowed_symbols=["BTCUSDT"]), admission=RecordingAdmission(store))
    await client.aclose()


def charges(intake: Intake) -> list[tuple[str, str]]:
    assert isinstance(intake.admission, RecordingAdmission)
    return intake.admission.charges


@pytest.mark.parametrize(
    ("command", "kind"),
    [
        (place("intake-2"), "write"),
        (CancelOrder("placed"), "write"),
        (CancelAll("BTCUSDT"), "write"),
        (AmendOrder("placed", price="50001.0"), "write"),
        (GetOrder("placed"), "read"),
        (ListOrders(symbol="BTCUSDT"), "read"),
        (WatchOrders(symbols=("BTCUSDT",)), "read"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Command) else value,
)
async def test_each_command_is_charged_once_as_its_kind(intake: Intake, command: Any, kind: str) -> None:
    placed = await intake.handle(place("intake-1"), Requester(client=PEER))
    charges(intake).clear()
    if getattr(command, "order_id", None) == "placed":
        command = dataclasses.replace(command, order_id=placed.order.order_id)
    if isinstance(command, AmendOrder):
        with pytest.raises(OrderNotAmendable):  # the order is not at the exchange yet: after the charge
            await intake.handle(command, Requester(client=PEER))
    else:
        await intake.handle(command, Requester(client=PEER))
    assert charges(intake) == [(PEER, kind)]


async def test_with_auth_the_api_client_is_charged_not_the_peer(intake: Intake) -> None:
    await intake.handle(ListOrders(), Requester(Caller("alice"), PEER))
    assert charges(intake) == [("alice", "read")]


async def test_a_batch_charges_each_item_not_itself(intake: Intake) -> None:
    batch = PlaceBatch(orders=(place("batch-1"), place("batch-2", price="1.5"), place("batch-3")))
    results = await intake.handle(batch, Requester(client=PEER))
    assert charges(intake) == [(PEER, "write")] * 3
    assert isinstance(results[0], CreateResult) and isinstance(results[2], CreateResult)
    assert isinstance(results[1], InvalidOrder) and results[1].field == "price"  # fails alone


async def test_a_command_breaking_a_bound_is_refused_before_it_is_charged(intake: Intake) -> None:
    malformed: tuple[Command[Any], ...] = (
        place("bound-1", user_id="u" * 65),
        CancelOrder("o" * 65),
        GetOrder(""),
        ListOrders(limit=501),
        CancelAll(""),
        WatchOrders(resume_token="9" * 65),
        PlaceBatch(orders=()),
    )
    for command in malformed:
        with pytest.raises(InvalidOrder):
            await intake.handle(command, Requester(client=PEER))
    assert charges(intake) == []


async def test_a_place_order_has_its_text_bounded_once(
    intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[str] = []
    check_user_id = gateway_validation.check_user_id

    def counting(field: str, user_id: str) -> None:
        checked.append(user_id)
        check_user_id(field, user_id)

    monkeypatch.setattr(gateway_validation, "check_user_id", counting)
    await intake.handle(place("once-1", user_id="alice"), Requester(client=PEER))
    assert checked == ["alice"]  # check_create_text ran once, not again while building the order
