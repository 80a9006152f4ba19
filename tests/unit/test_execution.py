"""The executor's invariants: sent once, never stale, ambiguity reconciled, cancels settled."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import fakeredis
import httpx
import pytest
import redis.exceptions

from order_execution.exchange.client import BinanceClient
from order_execution.orders import fsm
from order_execution.orders.model import Order, OrderState, now_ms
from order_execution.orders.store import OrderStore
from order_execution.orders.store_outages import store_outages
from order_execution.workers.execution import CancelNotSettled, OrderExecutor
from tests import factories
from tests.exchange_double import HandlerTransport

S = OrderState
Handler = Callable[[httpx.Request], httpx.Response]


class RecordingBus:
    """The order versions the executor's writes put in the outbox (after the NEW one)."""

    def __init__(self, redis: fakeredis.FakeAsyncRedis) -> None:
        self._redis = redis

    async def published(self) -> list[Order]:
        return [o for o in await factories.outbox_orders(self._redis) if o.state is not S.NEW]


class Exchange:
    """Scripted exchange: `answers` are popped per request; every request is recorded."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.answers: list[Handler] = []
        self.on_request: Callable[[], None] = lambda: None

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.on_request()
        return self.answers.pop(0)(request)

    def posts(self) -> int:
        return sum(1 for r in self.requests if r.method == "POST")


def reply(status: int, body: dict[str, Any]) -> Handler:
    return lambda request: httpx.Response(status, content=json.dumps(body).encode())


def order_object(status: str, executed: str = "0") -> Handler:
    return reply(200, {"status": status, "orderId": 99, "executedQty": executed, "avgPrice": "50000"})


def trades(*quantities: str) -> Handler:
    """A userTrades reply: one trade per quantity at 50000, 0.02 USDT fee each."""
    rows = [
        {
            "id": 500 + n,
            "orderId": 99,
            "qty": q,
            "price": "50000",
            "commission": "0.02",
            "commissionAsset": "USDT",
            "maker": False,
            "time": 1,
        }
        for n, q in enumerate(quantities)
    ]
    return lambda request: httpx.Response(200, content=json.dumps(rows).encode())


class FlakyStore:
    """Makes the store's next `failures` transitions fail as a refused Redis connection does."""

    def __init__(self, store: OrderStore, failures: int) -> None:
        self.failures = failures
        self._transition = store.transition
        store.transition = self.transition  # type: ignore[method-assign]

    async def transition(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures:
            self.failures -= 1
            with store_outages():  # what the store raises when Redis refuses the connection
                raise redis.exceptions.ConnectionError("Connection refused")
        return await self._transition(*args, **kwargs)


@pytest.fixture
async def setup() -> AsyncIterator[
    tuple[OrderExecutor, OrderStore, Exchange, RecordingBus, list[tuple[int, int]]]
]:
    redis = fakeredis.FakeAsyncRedis()
    store = OrderStore(redis)
    exchange = Exchange()
    client = BinanceClient(
        "http://exchange.test", api_key="k", secret_key="s", transport=HandlerTransport(exchange.handle)
    )
    bus = RecordingBus(redis)
    scheduled: list[tuple[int, int]] = []

    async def schedule(order: Order, attempt: int, delay_ms: int) -> None:
        scheduled.append((attempt, delay_ms))

    executor = OrderExecutor(
        store=store,
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
    assert [o.state for o in await bus.published()] == [S.SUBMITTING, S.SUBMITTED]


async def test_a_second_delivery_never_posts_again(setup: Any) -> None:
    executor, store, exchange, _, _ = setup
    await new_order(store)
    exchange.answers.append(order_object("NEW"))
    await executor.submit("o1")
    await executor.submit("o1")
    assert exchange.posts() == 1


async def test_redelivery_mid_send_reconciles_instead_of_posting(setup: Any) -> None:
    executor, store, exchange, _, _ = setup
    await new_order(store, age_ms=11_000)  # past max_order_age_ms + request timeout: no live sender
    await store.transition("o1", lambda o: fsm.transition(o, S.SUBMITTING))  # a worker died after claiming
    exchange.answers.append(order_object("NEW"))  # the query finds it live
    await executor.submit("o1")
    assert exchange.posts() == 0
    assert [r.method for r in exchange.requests] == ["GET"]
    assert (await store.get("o1")).state is S.SUBMITTED


async def test_a_second_message_leaves_a_live_claim_alone(setup: Any) -> None:
    """A copy of the message (the reconciler re-queues NEW orders) meets the order a worker is sending."""
    executor, store, exchange, _, _ = setup
    await new_order(store)
    await store.transition("o1", lambda o: fsm.transition(o, S.SUBMITTING))
    await executor.submit("o1")
    assert exchange.requests == [] and (await store.get("o1")).state is S.SUBMITTING


async def test_stale_order_expires_without_being_sent(setup: Any) -> None:
    executor, store, exchange, bus, _ = setup
    await new_order(store, age_ms=6000)
    await executor.submit("o1")
    stored = await store.get("o1")
    assert stored.state is S.EXPIRED and "max_order_age_ms" in stored.reject_reason
    assert exchange.requests == [] and (await bus.published())[-1].state is S.EXPIRED


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
    exchange.answers += [ambiguous, order_object("FILLED", "0.01"), trades("0.004", "0.006")]
    await executor.submit("o1")
    assert exchange.posts() == 1
    stored = await store.get("o1")
    assert stored.state is S.FILLED and stored.filled_quantity == Decimal("0.01")
    assert [f.trade_id for f in stored.fills] == ["500", "501"] and stored.fee == Decimal("0.04")
    assert fsm.is_settled(stored)
    assert scheduled == []


async def test_misses_never_turn_unknown_into_rejected(setup: Any) -> None:
    """A few seconds of -2013 prove nothing (the request may still be in flight): it stays UNKNOWN."""
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
    assert scheduled == [(1, 200), (2, 1000), (3, 3000)]
    assert (await store.get("o1")).state is S.UNKNOWN
    assert exchange.posts() == 1


async def test_redis_blip_at_the_claim_is_retried(setup: Any) -> None:
    executor, store, exchange, _, _ = setup
    await new_order(store)
    FlakyStore(store, failures=2)
    exchange.answers.append(order_object("NEW"))
    await executor.submit("o1")
    assert (await store.get("o1")).state is S.SUBMITTED and exchange.posts() == 1


async def test_redis_blip_after_the_post_still_records_the_answer(setup: Any) -> None:
    executor, store, exchange, _, _ = setup
    await new_order(store)
    exchange.answers.append(order_object("NEW"))
    flaky = FlakyStore(store, failures=0)

    def redis_goes_away() -> None:
        flaky.failures = 3  # the write of the reply meets a Redis outage

    exchange.on_request = redis_goes_away
    await executor.submit("o1")
    assert (await store.get("o1")).state is S.SUBMITTED and exchange.posts() == 1


async def test_refused_before_execution_is_sent_again_with_the_same_client_id(setup: Any) -> None:
    executor, store, exchange, _, _ = setup
    await new_order(store)
    unavailable = reply(503, {"code": -1001, "msg": "Service Unavailable."})
    exchange.answers += [unavailable, unavailable, order_object("NEW")]
    await executor.submit("o1")
    stored = await store.get("o1")
    assert stored.state is S.SUBMITTED and exchange.posts() == 3
    client_ids = {r.url.params["newClientOrderId"] for r in exchange.requests}
    assert client_ids == {stored.client_order_id}


async def test_refused_until_the_age_budget_runs_out_expires_unsent(setup: Any) -> None:
    executor, store, exchange, _, _ = setup
    await new_order(store, age_ms=4700)  # 300 ms left: a few tries with backoff, then too old
    exchange.answers += [reply(503, {"code": -1001, "msg": "Service Unavailable."})] * 20
    await executor.submit("o1")
    stored = await store.get("o1")
    assert stored.state is S.EXPIRED and "max_order_age_ms" in stored.reject_reason
    assert 1 <= exchange.posts() < 20


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
        trades("0.01"),
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
