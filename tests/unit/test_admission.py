"""Admission: the gateway refuses at once what the account could not send in time.

First `Admission` on its own (fakeredis store, budget and breakers), then through the
real gRPC socket: RESOURCE_EXHAUSTED with the wait, UNAVAILABLE while the create breaker
is open, and nothing stored either way.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import fakeredis
import grpc
import pytest

import order_execution.gateway.admission as gateway_admission
from order_execution.exchange.breakers import Breakers, Group
from order_execution.exchange.errors import ExchangeUnavailable
from order_execution.exchange.rate_budget import Cost, Priority, RateBudget
from order_execution.gateway.admission import AccountGate, Admission
from order_execution.orders import fsm
from order_execution.orders.errors import ExchangeNotAccepting, Overloaded
from order_execution.orders.model import DEFAULT_ACCOUNT, OrderState, now_ms
from order_execution.orders.store import OrderStore
from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc
from order_execution.runtime.settings import AdmissionSettings, CircuitBreakerSettings
from tests.factories import make_order, outbox_orders
from tests.unit.gateway_harness import running_gateway

BREAKER_SETTINGS = CircuitBreakerSettings(failure_threshold=3, timeout=30, max_requests=1)
OPEN_MESSAGE = "circuit breaker binance_create_order is open"
MAX_ORDER_AGE_MS = 1000
# The budget: 10 creates a second after a burst of 16 (20 less the cancel reserve of 4), so
# within max_order_age_ms less its 10 % send margin (900 ms) an order may have 24 queued
# ahead of it, not 25.
FITS, TOO_MANY = 24, 25


@dataclass
class Setup:
    """One account's Redis: the store, the shared budget and the breakers, as the gateway sees them."""

    server: fakeredis.FakeServer = field(default_factory=fakeredis.FakeServer)
    connections: list[Any] = field(default_factory=list)
    queued: int = 0

    def redis(self) -> fakeredis.FakeAsyncRedis:
        connection = fakeredis.FakeAsyncRedis(server=self.server)
        self.connections.append(connection)
        return connection

    def store(self) -> OrderStore:
        return OrderStore(self.redis())

    def budget(self) -> RateBudget:
        return RateBudget(self.redis(), requests_per_second=10, burst=20, cancel_reserve=0.2)

    def breakers(self) -> Breakers:
        """A worker's breakers, on the same Redis."""
        connection = fakeredis.FakeAsyncRedis(server=self.server)
        self.connections.append(connection)
        return Breakers(BREAKER_SETTINGS, client=connection)

    def admission(self, **settings: Any) -> Admission:
        return Admission(
            store=self.store(),
            # Every check reads Redis inline: these tests write the queue, breaker and budget as other
            # processes do and check at once (the snapshot's own tests: test_admission_snapshot.py).
            settings=AdmissionSettings(**{"snapshot_max_age_ms": 0, **settings}),
            max_order_age_ms=MAX_ORDER_AGE_MS,
            accounts={DEFAULT_ACCOUNT: AccountGate(self.budget(), "oe")},
            breaker_settings=BREAKER_SETTINGS,
        )

    async def queue(self, count: int, symbol: str = "BTCUSDT") -> None:
        """`count` more accepted, not yet sent orders of `symbol` (ids o1, o2, ...)."""
        store = self.store()
        for _ in range(count):
            self.queued += 1
            n = self.queued
            await store.create(make_order(order_id=f"o{n}", client_order_id=f"oe-{n}", symbol=symbol))


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    setup = Setup()
    yield setup
    for connection in setup.connections:
        if isinstance(connection, fakeredis.FakeAsyncRedis):
            await connection.aclose()
        else:
            connection.close()


async def open_breaker(breakers: Breakers, group: Group = Group.CREATE) -> None:
    """Three exchange faults in a row, as a worker meets them; then the worker stops, its
    breakers' last writes sent to Redis."""
    for _ in range(BREAKER_SETTINGS.failure_threshold):
        with pytest.raises(ExchangeUnavailable), breakers.guard(group):
            raise ExchangeUnavailable("HTTP 503 -1001: Service Unavailable.")
    assert breakers.state(group) == "open"
    await breakers.aclose()


# --- Admission on its own ---------------------------------------------------------------


async def test_queued_orders_the_budget_cannot_serve_in_time_are_refused_with_the_wait(
    setup: Setup,
) -> None:
    admission = setup.admission()
    await setup.queue(FITS - 5, "BTCUSDT")
    await setup.queue(5, "ETHUSDT")  # the account's budget serves every symbol's queue
    await admission.check_create("BTCUSDT")
    await setup.queue(1, "ETHUSDT")
    with pytest.raises(Overloaded) as caught:
        await admission.check_create("BTCUSDT")
    message = str(caught.value)
    assert message.startswith("rate budget: this order would wait about ")
    wait_ms = int(re.findall(r"about (\d+) ms", message)[0])
    assert 900 < wait_ms <= 1001  # 10 orders over the burst at 10 a second
    assert "requests_per_second" in message and f"({TOO_MANY} orders queued ahead)" in message
    assert caught.value.limit == "rate_budget"


async def test_tokens_other_replicas_spent_count_against_the_queue(setup: Setup) -> None:
    admission, worker_budget = setup.admission(), setup.budget()
    await setup.queue(10)
    await admission.check_create("BTCUSDT")
    for _ in range(16):  # workers spent the 16 tokens creates may use: 11 orders need 1.1 s
        assert (await worker_budget.acquire(Cost(weight=0, orders=1), Priority.CREATE)).wait_ms == 0
    with pytest.raises(Overloaded, match="rate budget"):
        await admission.check_create("BTCUSDT")


async def test_a_full_orders_window_refuses_until_it_ends(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = now_ms()
    t = now - now % 10_000 + 11_000  # one second into the next 10 s window
    monkeypatch.setattr(gateway_admission, "now_ms", lambda: t)
    admission, worker_budget = setup.admission(), setup.budget()
    await worker_budget.correct(weight_1m=None, orders_10s=200, orders_1m=200, at_ms=t)
    await admission.check_create("BTCUSDT")  # 201 of 300 x 0.9 x 0.8 = 216
    await worker_budget.correct(weight_1m=None, orders_10s=216, orders_1m=216, at_ms=t)
    with pytest.raises(Overloaded, match=r"about 9000 ms for ORDERS per 10 s"):
        await admission.check_create("BTCUSDT")


async def test_max_queued_per_symbol_bounds_each_symbol_queue(setup: Setup) -> None:
    admission = setup.admission(max_queued_per_symbol=3)
    await setup.queue(3, "BTCUSDT")
    with pytest.raises(Overloaded) as caught:
        await admission.check_create("BTCUSDT")
    assert str(caught.value) == (
        "symbol: BTCUSDT has 3 orders accepted and not yet sent "
        "(admission.max_queued_per_symbol=3); retry later"
    )
    assert caught.value.limit == "queue_bound"
    await admission.check_create("ETHUSDT")
    store = setup.store()
    await store.transition("o1", lambda o: fsm.transition(o, OrderState.SUBMITTING))  # claimed: still unsent
    with pytest.raises(Overloaded):
        await admission.check_create("BTCUSDT")
    await store.transition("o1", lambda o: fsm.transition(o, OrderState.SUBMITTED))  # the exchange has it
    await admission.check_create("BTCUSDT")


def test_each_client_has_its_own_request_rate(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(gateway_admission, "time", SimpleNamespace(monotonic=lambda: clock.now))
    admission = setup.admission(client_requests_per_second=2, client_burst=3)
    for _ in range(3):
        admission.check_client("alice")
    with pytest.raises(Overloaded) as caught:
        admission.check_client("alice")
    assert str(caught.value) == "client alice: over 2 requests/s; slow down (retry in 500 ms)"
    assert caught.value.limit == "client_rate"
    admission.check_client("bob")
    clock.now += 0.5
    admission.check_client("alice")
    with pytest.raises(Overloaded):
        admission.check_client("alice")


async def test_an_open_create_breaker_refuses_until_its_timeout(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    admission = setup.admission()
    await open_breaker(setup.breakers(), Group.CANCEL)  # cancels failing do not stop creates
    await admission.check_create("BTCUSDT")
    await open_breaker(setup.breakers())
    with pytest.raises(ExchangeNotAccepting, match=OPEN_MESSAGE):
        await admission.check_create("BTCUSDT")
    # Once the timeout has passed, the next order is the breaker's trial call: let it through.
    later = SimpleNamespace(monotonic=time.monotonic, time=lambda: time.time() + 31)
    monkeypatch.setattr(gateway_admission, "time", later)
    await admission.check_create("BTCUSDT")


async def test_a_ban_refuses_and_a_short_429_block_does_not(setup: Setup) -> None:
    admission, worker_budget = setup.admission(), setup.budget()
    await worker_budget.block(now_ms() + 500, "429: request rate over the exchange's limit")
    await admission.check_create("BTCUSDT")  # it will be over well within max_order_age_ms
    await worker_budget.block(now_ms() + 3000, "429: request rate over the exchange's limit")
    with pytest.raises(Overloaded, match=r"rate budget: .* for 429"):
        await admission.check_create("BTCUSDT")
    until = now_ms() + 120_000
    await worker_budget.block(until, f"418: IP banned by the exchange until {until}")
    with pytest.raises(ExchangeNotAccepting) as caught:
        await admission.check_create("BTCUSDT")
    assert str(caught.value) == f"the exchange banned this IP: 418: IP banned by the exchange until {until}"


# --- through the gRPC socket --------------------------------------------------------------


@dataclass
class Gateway:
    stub: order_pb2_grpc.OrderServiceAsyncStub
    redis: fakeredis.FakeAsyncRedis
    setup: Setup

    async def keys(self) -> list[str]:
        return sorted(str(key) for key in await self.redis.keys("*"))


@pytest.fixture
async def running(setup: Setup) -> AsyncIterator[Gateway]:
    """The gateway's servicer on a real gRPC socket, with admission on the account's Redis."""
    redis = setup.redis()
    admission = Admission(
        store=OrderStore(redis),
        settings=AdmissionSettings(snapshot_max_age_ms=0),
        max_order_age_ms=MAX_ORDER_AGE_MS,
        accounts={DEFAULT_ACCOUNT: AccountGate(setup.budget(), "oe")},
        breaker_settings=BREAKER_SETTINGS,
    )
    async with running_gateway(redis, redis, admission=admission) as stub:
        yield Gateway(stub, redis, setup)


def limit_order(client_order_id: str) -> pb.CreateOrderRequest:
    return pb.CreateOrderRequest(
        symbol="BTCUSDT",
        side=pb.BUY,
        type=pb.LIMIT,
        quantity="0.002",
        price="50000.0",
        time_in_force=pb.GTC,
        client_order_id=client_order_id,
    )


async def test_create_order_over_the_budget_is_resource_exhausted_and_stores_nothing(
    running: Gateway,
) -> None:
    await running.setup.queue(FITS)
    accepted = await running.stub.CreateOrder(limit_order("fits"), timeout=5)  # 24 ahead of it
    assert accepted.state == pb.NEW
    before, outbox = await running.keys(), len(await outbox_orders(running.redis))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.stub.CreateOrder(limit_order("one-too-many"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = caught.value.details() or ""
    assert re.search(r"rate budget: this order would wait about \d+ ms for requests_per_second", details)
    assert await running.keys() == before and len(await outbox_orders(running.redis)) == outbox
    assert await OrderStore(running.redis).find_by_client_id("one-too-many") is None


async def test_create_order_while_the_create_breaker_is_open_is_unavailable_and_stores_nothing(
    running: Gateway,
) -> None:
    await open_breaker(running.setup.breakers())
    before = await running.keys()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.stub.CreateOrder(limit_order("during-outage"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert OPEN_MESSAGE in (caught.value.details() or "")
    assert await running.keys() == before
    assert await outbox_orders(running.redis) == []
