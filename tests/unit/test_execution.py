"""The executor's invariants: sent once, never stale, ambiguity reconciled, cancels settled."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any, cast

import fakeredis
import httpx
import pytest

from orders import fsm
from orders.events import EventBus
from orders.model import Order, OrderState, now_ms
from orders.store import OrderStore
from tests import factories
from workers.binance import BinanceClient
from workers.execution import CancelNotSettled, OrderExecutor

S = OrderState
Handler = Callable[[httpx.Request], httpx.Response]


class RecordingBus:
    def __init__(self) -> None:
        self.published: list[Order] = []

    async def publish_update(self, order: Order) -> None:
        self.published.append(order)


class Exchange:
    """Scripted exchange: `answers` are popped per request; every request is recorded."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.answers: list[Handler] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answers.pop(0)(request)

    def posts(self) -> int:
        return sum(1 for r in self.requests if r.method == "POST")


def reply(status: int, body: dict[str, Any]) -> Handler:
    return lambda request: httpx.Response(status, content=json.dumps(body).encode())


def order_object(status: str, executed: str = "0") -> Handler:
    return reply(200, {"status": status, "orderId": 99, "executedQty": executed, "avgPrice": "50000"})


@pytest.fixture
async def setup() -> AsyncIterator[
    tuple[OrderExecutor, OrderStore, Exchange, RecordingBus, list[tuple[int, int]]]
]:
    redis = fakeredis.FakeAsyncRedis()
    store = OrderStore(redis)
    exchange = Exchange()
    client = BinanceClient(
        "http://exchange.test", api_key="k", secret_key="s", transport=httpx.MockTransport(exchange.handle)
    )
    bus = RecordingBus()
    scheduled: list[tuple[int, int]] = []

    async def schedule(order: Order, attempt: int, delay_ms: int) -> None:
        scheduled.append((attempt, delay_ms))

    executor = OrderExecutor(
        store=store,
        bus=cast(EventBus, bus),
        exchange=client,
        max_order_age_ms=5000,
        schedule_reconcile=schedule,
    )
    yield executor, store, exchange, bus, scheduled
    await client.close()
    await redis.aclose()


async def new_order(store: OrderStore, *, age_ms: int = 0) -> Order:
    order = factories.make_order(created_at=now_ms() - age_ms)
    return (await store.create(order)).order


async def test_submit_records_the_exchange_answer_and_publishes(setup: Any) -> None:
    executor, store, exchange, bus, _ = setup
    await new_order(store)
    exchange.answers.append(order_object("NEW"))
    await executor.submit("o1")
    stored = await store.get("o1")
    assert stored.state is S.SUBMITTED and stored.exchange_order_id == "99"
    assert [o.state for o in bus.published] == [S.SUBMITTED]


async def test_a_second_delivery_never_posts_again(setup: Any) -> None:
    executor, store, exchange, _, _ = setup
    await new_order(store)
    exchange.answers.append(order_object("NEW"))
    await executor.submit("o1")
    await executor.submit("o1")
    assert exchange.posts() == 1


async def test_redelivery_mid_send_reconciles_instead_of_posting(setup: Any) -> None:
    executor, store, exchange, _, _ = setup
    await new_order(store)
    await store.transition("o1", lambda o: fsm.transition(o, S.SUBMITTING))  # a worker died after claiming
    exchange.answers.append(order_object("NEW"))  # the query finds it live
    await executor.submit("o1")
    assert exchange.posts() == 0
    assert [r.method for r in exchange.requests] == ["GET"]
    assert (await store.get("o1")).state is S.SUBMITTED


async def test_stale_order_expires_without_being_sent(setup: Any) -> None:
    executor, store, exchange, bus, _ = setup
    await new_order(store, age_ms=6000)
    await executor.submit("o1")
    stored = await store.get("o1")
    assert stored.state is S.EXPIRED and "max_order_age_ms" in stored.reject_reason
    assert exchange.requests == [] and bus.published[-1].state is S.EXPIRED


async def test_locally_canceled_order_is_skipped(setup: Any) -> None:
    executor, store, exchange, _, _ = setup
    await new_order(store)
    await store.transition("o1", lambda o: fsm.transition(o, S.CANCELED))
    await executor.submit("o1")
    assert exchange.requests == []


async def test_business_rejection_is_final_with_reason(setup: Any) -> None:
    executor, store, exchange, _, _ = setup
    await new_order(store)
    exchange.answers.append(reply(400, {"code": -2019, "msg": "Margin is insufficient."}))
    await executor.submit("o1")
    stored = await store.get("o1")
    assert stored.state is S.REJECTED and "-2019" in stored.reject_reason


@pytest.mark.parametrize(
    "ambiguous",
    [
        reply(503, {"code": -1000, "msg": "Unknown error, please check your request or try again later."}),
        reply(408, {"code": -1007, "msg": "Timeout waiting for response from backend server."}),
        reply(400, {"code": -4116, "msg": "ClientOrderId is duplicated."}),
    ],
)
async def test_ambiguous_outcome_goes_unknown_then_query_settles(setup: Any, ambiguous: Handler) -> None:
    executor, store, exchange, _, scheduled = setup
    await new_order(store)
    exchange.answers += [ambiguous, order_object("FILLED", "0.01")]
    await executor.submit("o1")
    assert exchange.posts() == 1
    stored = await store.get("o1")
    assert stored.state is S.FILLED and stored.filled_quantity == Decimal("0.01")
    assert scheduled == []


async def test_unknown_order_not_found_is_rejected_after_every_retry(setup: Any) -> None:
    executor, store, exchange, _, scheduled = setup
    await new_order(store)
    not_found = reply(400, {"code": -2013, "msg": "Order does not exist."})
    exchange.answers += [reply(502, {"code": -1000, "msg": "Unknown error"}), not_found]
    await executor.submit("o1")
    assert (await store.get("o1")).state is S.UNKNOWN
    assert scheduled == [(1, 200)]
    for attempt in (1, 2, 3):
        exchange.answers.append(not_found)
        await executor.reconcile("o1", attempt)
    stored = await store.get("o1")
    assert stored.state is S.REJECTED and "not found at the exchange" in stored.reject_reason
    assert exchange.posts() == 1


async def test_cancel_at_exchange_records_final_state(setup: Any) -> None:
    executor, store, exchange, _, _ = setup
    await new_order(store)
    exchange.answers.append(order_object("NEW"))
    await executor.submit("o1")
    await store.transition("o1", lambda o: fsm.transition(o, S.PENDING_CANCEL))
    exchange.answers.append(order_object("CANCELED", "0.004"))
    await executor.cancel("o1")
    stored = await store.get("o1")
    assert stored.state is S.CANCELED and stored.filled_quantity == Decimal("0.004")
    assert exchange.requests[-1].method == "DELETE"


async def test_cancel_of_already_filled_order_reports_filled(setup: Any) -> None:
    executor, store, exchange, _, _ = setup
    await new_order(store)
    exchange.answers.append(order_object("NEW"))
    await executor.submit("o1")
    await store.transition("o1", lambda o: fsm.transition(o, S.PENDING_CANCEL))
    exchange.answers += [
        reply(400, {"code": -2011, "msg": "Unknown order sent."}),
        order_object("FILLED", "0.01"),
    ]
    await executor.cancel("o1")
    assert (await store.get("o1")).state is S.FILLED


async def test_cancel_racing_an_in_flight_create_asks_for_a_retry(setup: Any) -> None:
    executor, store, exchange, _, _ = setup
    await new_order(store)
    await store.transition("o1", lambda o: fsm.transition(o, S.SUBMITTING))
    await store.transition("o1", lambda o: fsm.transition(o, S.PENDING_CANCEL))
    exchange.answers += [
        reply(400, {"code": -2011, "msg": "Unknown order sent."}),
        reply(400, {"code": -2013, "msg": "Order does not exist."}),
    ]
    with pytest.raises(CancelNotSettled):
        await executor.cancel("o1")
    assert (await store.get("o1")).state is S.PENDING_CANCEL
