"""Endpoint breakers, through the exchange client: exchange faults open them, business answers never do.

Their state is in Redis (fakeredis here, and once the machine's Redis, db 14), so a
breaker one process opens is open for all; each `Breakers` below has its own connection,
as another process would.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import httpx
import pytest
import redis

from exchange import errors
from exchange.breakers import Breakers, Group, breaker_key
from exchange.client import BinanceClient
from exchange.http import ResponseLost
from orders.settings import CircuitBreakerSettings
from tests.exchange_double import HandlerTransport
from tests.factories import make_order

# timeout 2: pybreaker keeps opened_at in whole seconds, so 1 could half-open right after a trip.
REFRESH_S = 0.05  # how stale another process's view of a breaker may be
SETTINGS = CircuitBreakerSettings(failure_threshold=3, timeout=2, max_requests=1)
OPEN_MESSAGE = "circuit breaker binance_create_order is open"
ORDER = make_order()
REAL_REDIS_DB = 14

Handler = Callable[[httpx.Request], httpx.Response]


def reply(status: int, body: object) -> Handler:
    return lambda request: httpx.Response(status, content=json.dumps(body).encode())


def read_timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


def connection_refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def bad_gateway(request: httpx.Request) -> httpx.Response:
    return httpx.Response(502, content=b"<html>502 Bad Gateway</html>")


NEW = reply(200, {"status": "NEW", "orderId": 99, "executedQty": "0", "avgPrice": "0"})
CANCELED = reply(200, {"status": "CANCELED", "orderId": 99, "executedQty": "0", "avgPrice": "0"})
MARGIN = reply(400, {"code": -2019, "msg": "Margin is insufficient."})


class Exchange:
    """Scripted exchange: `answers` are popped per request; each request is recorded with the
    create breaker's state as the exchange saw it arrive."""

    def __init__(self, breakers: Breakers) -> None:
        self.breakers = breakers
        self.requests: list[httpx.Request] = []
        self.create_states: list[str] = []
        self.answers: list[Handler] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.create_states.append(self.breakers.state(Group.CREATE))
        return self.answers.pop(0)(request)


@dataclass
class SharedRedis:
    """One Redis the breakers of one account live in; `breakers()` is another process's view."""

    new_connection: Callable[[], redis.Redis]
    namespace: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex[:8]}")
    clients: list[BinanceClient] = field(default_factory=list)
    connections: list[redis.Redis] = field(default_factory=list)

    def connect(self) -> redis.Redis:
        connection = self.new_connection()
        self.connections.append(connection)
        return connection

    def breakers(self) -> Breakers:
        return Breakers(SETTINGS, client=self.connect(), namespace=self.namespace, refresh_s=REFRESH_S)

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        for connection in self.connections:
            connection.close()

    def client(self, breakers: Breakers) -> tuple[BinanceClient, Exchange]:
        exchange = Exchange(breakers)
        client = BinanceClient(
            "http://exchange.test",
            api_key="k",
            secret_key="s",
            transport=HandlerTransport(exchange.handle),
            breakers=breakers,
        )
        self.clients.append(client)
        return client, exchange

    def opened_at_s(self) -> int:
        raw = self.connect().get(breaker_key(self.namespace, Group.CREATE, "opened_at"))
        assert isinstance(raw, bytes)
        return int(raw)


@pytest.fixture
async def shared() -> AsyncIterator[SharedRedis]:
    server = fakeredis.FakeServer()
    shared = SharedRedis(lambda: fakeredis.FakeRedis(server=server))
    yield shared
    await shared.close()


@pytest.fixture(params=["fakeredis", "redis"])
async def any_redis(request: pytest.FixtureRequest) -> AsyncIterator[SharedRedis]:
    """`shared`, on fakeredis and on the machine's Redis (db 14, flushed before and after)."""
    if request.param == "fakeredis":
        server = fakeredis.FakeServer()
        shared = SharedRedis(lambda: fakeredis.FakeRedis(server=server))
    else:
        host, port = str(request.getfixturevalue("real_redis")).split(":")
        shared = SharedRedis(lambda: redis.Redis(host=host, port=int(port), db=REAL_REDIS_DB))
    admin = shared.connect()
    admin.flushdb()
    yield shared
    admin.flushdb()
    await shared.close()


async def open_create_breaker(client: BinanceClient, exchange: Exchange) -> None:
    """Three timed-out POSTs: the third trips the breaker."""
    exchange.answers += [read_timeout] * SETTINGS.failure_threshold
    for _ in range(SETTINGS.failure_threshold):
        with pytest.raises(errors.OutcomeUnknown):
            await client.new_order(ORDER)


async def wait_out_the_timeout(shared: SharedRedis) -> None:
    """Sleep until the open breaker's timeout has passed (pybreaker keeps whole seconds)."""
    delay = shared.opened_at_s() + SETTINGS.timeout - time.time()
    assert delay <= SETTINGS.timeout
    await asyncio.sleep(max(0.0, delay) + 0.02)


@pytest.mark.parametrize(
    ("fault", "raised"),
    [
        (read_timeout, errors.OutcomeUnknown),
        (bad_gateway, errors.OutcomeUnknown),
        (reply(503, {"code": -1001, "msg": "Service Unavailable."}), errors.ExchangeUnavailable),
        (
            reply(503, {"code": -1008, "msg": "Server is currently overloaded with other requests."}),
            errors.ExchangeUnavailable,
        ),
        (connection_refused, errors.ExchangeUnavailable),
    ],
    ids=["read-timeout", "502", "503", "overloaded", "connect-refused"],
)
async def test_exchange_faults_open_the_create_breaker_after_three(
    shared: SharedRedis, fault: Handler, raised: type[errors.ExchangeError]
) -> None:
    breakers = shared.breakers()
    client, exchange = shared.client(breakers)
    exchange.answers += [fault] * 3
    for _ in range(3):
        with pytest.raises(raised):
            await client.new_order(ORDER)
    assert breakers.state(Group.CREATE) == "open"
    with pytest.raises(errors.CircuitOpen) as caught:
        await client.new_order(ORDER)
    assert str(caught.value) == OPEN_MESSAGE and caught.value.group == "binance_create_order"
    assert len(exchange.requests) == 3  # nothing reached the exchange while open


async def test_a_timeout_on_the_trip_call_stays_outcome_unknown(shared: SharedRedis) -> None:
    """The POST that trips the breaker may have executed: its error must still say so."""
    breakers = shared.breakers()
    client, exchange = shared.client(breakers)
    exchange.answers += [read_timeout] * 3
    for _ in range(2):
        with pytest.raises(errors.OutcomeUnknown):
            await client.new_order(ORDER)
    with pytest.raises(errors.ExchangeError) as caught:
        await client.new_order(ORDER)
    assert type(caught.value) is errors.OutcomeUnknown
    assert isinstance(caught.value.__cause__, ResponseLost)
    assert isinstance(caught.value.__cause__.__cause__, httpx.ReadTimeout)
    assert breakers.state(Group.CREATE) == "open" and len(exchange.requests) == 3


@pytest.mark.parametrize(
    ("answer", "raised"),
    [
        (MARGIN, errors.OrderRejected),
        (
            reply(
                400,
                {
                    "code": -5022,
                    "msg": "Due to the order could not be executed as maker, the Post Only order will be "
                    "rejected. The order will not be recorded in the order history",
                },
            ),
            errors.OrderRejected,
        ),
        (
            reply(
                400,
                {
                    "code": -4164,
                    "msg": "Order's notional must be no smaller than 100 (unless you choose reduce only).",
                },
            ),
            errors.OrderRejected,
        ),
        (reply(429, {"code": -1015, "msg": "Too many new orders."}), errors.RateLimited),
        (
            reply(400, {"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."}),
            errors.ClockSkew,
        ),
    ],
    ids=["margin", "post-only", "notional", "rate-limited", "clock"],
)
async def test_business_rate_limit_and_clock_answers_never_open_it(
    shared: SharedRedis, answer: Handler, raised: type[errors.ExchangeError]
) -> None:
    breakers = shared.breakers()
    client, exchange = shared.client(breakers)
    exchange.answers += [answer] * 5 + [NEW]
    for _ in range(5):
        with pytest.raises(raised):
            await client.new_order(ORDER)
    assert breakers.state(Group.CREATE) == "closed"
    assert (await client.new_order(ORDER))["status"] == "NEW"
    assert len(exchange.requests) == 6


async def test_only_consecutive_faults_count(shared: SharedRedis) -> None:
    breakers = shared.breakers()
    client, exchange = shared.client(breakers)
    exchange.answers += [read_timeout, read_timeout, MARGIN, read_timeout, read_timeout]
    for raised in (errors.OutcomeUnknown, errors.OutcomeUnknown, errors.OrderRejected):
        with pytest.raises(raised):
            await client.new_order(ORDER)
    for _ in range(2):
        with pytest.raises(errors.OutcomeUnknown):
            await client.new_order(ORDER)
    assert breakers.state(Group.CREATE) == "closed"
    exchange.answers.append(read_timeout)
    with pytest.raises(errors.OutcomeUnknown):
        await client.new_order(ORDER)
    assert breakers.state(Group.CREATE) == "open"


async def test_cancels_and_queries_still_go_out_while_creates_are_open(shared: SharedRedis) -> None:
    breakers = shared.breakers()
    client, exchange = shared.client(breakers)
    await open_create_breaker(client, exchange)
    exchange.answers += [CANCELED, NEW]
    assert (await client.cancel_order("BTCUSDT", "oe-1"))["status"] == "CANCELED"
    assert (await client.query_order("BTCUSDT", "oe-2"))["status"] == "NEW"
    assert [r.method for r in exchange.requests[-2:]] == ["DELETE", "GET"]
    assert breakers.state(Group.CANCEL) == "closed" and breakers.state(Group.QUERY) == "closed"
    assert breakers.state(Group.CREATE) == "open"


async def test_a_breaker_one_process_opens_is_open_for_every_process(any_redis: SharedRedis) -> None:
    worker_a = any_redis.breakers()
    client_a, exchange_a = any_redis.client(worker_a)
    worker_b = any_redis.breakers()
    client_b, exchange_b = any_redis.client(worker_b)
    assert worker_b.state(Group.CREATE) == "closed"
    await open_create_breaker(client_a, exchange_a)
    await asyncio.sleep(REFRESH_S)  # B re-reads the shared state at most this often
    assert worker_b.state(Group.CREATE) == "open"
    with pytest.raises(errors.CircuitOpen, match=OPEN_MESSAGE):
        await client_b.new_order(ORDER)
    assert exchange_b.requests == []
    exchange_b.answers.append(CANCELED)
    await client_b.cancel_order("BTCUSDT", "oe-1")  # another group, its own breaker
    assert len(exchange_b.requests) == 1


async def test_successes_in_the_closed_state_write_nothing_to_redis(shared: SharedRedis) -> None:
    breakers = shared.breakers()
    client, exchange = shared.client(breakers)
    exchange.answers += [NEW] * 3
    await client.new_order(ORDER)  # first call: reads the shared state
    connection = shared.connections[-1]
    writes = []
    original = connection.execute_command

    def spy(*args: Any, **options: Any) -> Any:
        writes.append(args[0])
        return original(*args, **options)  # type: ignore[no-untyped-call]

    connection.execute_command = spy  # type: ignore[method-assign]
    await client.new_order(ORDER)
    await client.new_order(ORDER)
    assert [command for command in writes if command not in ("MGET", "GET")] == []
    assert len(writes) <= 1  # at most one refresh of the state in REFRESH_S


async def test_after_the_timeout_a_successful_trial_closes_it(shared: SharedRedis) -> None:
    breakers = shared.breakers()
    client, exchange = shared.client(breakers)
    await open_create_breaker(client, exchange)
    with pytest.raises(errors.CircuitOpen):
        await client.new_order(ORDER)
    await wait_out_the_timeout(shared)
    exchange.answers += [NEW, NEW]
    assert (await client.new_order(ORDER))["status"] == "NEW"
    assert exchange.create_states[-1] == "half-open"  # the trial call went out half-open
    assert breakers.state(Group.CREATE) == "closed"  # max_requests=1 success closes it
    await client.new_order(ORDER)
    assert len(exchange.requests) == 5


async def test_a_timed_out_trial_opens_it_again_and_stays_outcome_unknown(shared: SharedRedis) -> None:
    breakers = shared.breakers()
    client, exchange = shared.client(breakers)
    await open_create_breaker(client, exchange)
    await wait_out_the_timeout(shared)
    exchange.answers.append(read_timeout)
    with pytest.raises(errors.ExchangeError) as caught:
        await client.new_order(ORDER)
    assert type(caught.value) is errors.OutcomeUnknown  # the trial POST may have executed
    assert exchange.create_states[-1] == "half-open"
    assert breakers.state(Group.CREATE) == "open"
    with pytest.raises(errors.CircuitOpen):
        await client.new_order(ORDER)
    assert len(exchange.requests) == 4
