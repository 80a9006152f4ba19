"""Endpoint breakers, through the exchange client: exchange faults open them, business answers never do.

Their state is in Redis (fakeredis here, and once the machine's Redis, in its namespaced db:
see tests/redis_dbs.py), so a
breaker one process opens is open for all; each `Breakers` below has its own connection,
as another process would. The request path never waits on Redis: a frozen Redis (a
fakeredis client whose round trips hang while `frozen`) neither holds the calls nor the
event loop, and the shared state resumes syncing once it answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import fakeredis
import httpx
import pytest
import redis.asyncio as aioredis

from order_execution.exchange import errors
from order_execution.exchange.breakers import Breakers, Group, breaker_key
from order_execution.exchange.client import BinanceClient
from order_execution.exchange.http import HttpResponse, ResponseLost
from order_execution.runtime.settings import CircuitBreakerSettings
from tests.exchange_double import HandlerTransport
from tests.factories import make_order
from tests.redis_dbs import delete_keys_under, redis_db

# timeout 2: pybreaker keeps opened_at in whole seconds, so 1 could half-open right after a trip.
REFRESH_S = 0.05  # how stale another process's view of a breaker may be
SETTINGS = CircuitBreakerSettings(failure_threshold=3, timeout=2, max_requests=1)
OPEN_MESSAGE = "circuit breaker binance_create_order is open"
ORDER = make_order()
# How late a background sync may be on a loaded 2-core machine (the suite runs beside other work):
# the checks are that syncing happens on its own at all; when nothing is loaded it takes ~REFRESH_S.
SLACK_S = 5.0

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


class FreezableRedis:
    """A fakeredis asyncio client that stops answering while `frozen`, as a SIGSTOPped Redis or a
    partition does: each pipeline round trip then hangs until cancelled. It records the
    commands of every round trip in `sent`, and of every one given up while frozen in `lost`,
    and the task that sent each one in `senders` (so a test can tell the request path's
    round trips from the background sync's)."""

    def __init__(self, server: fakeredis.FakeServer) -> None:
        self.redis = fakeredis.FakeAsyncRedis(server=server)
        self.frozen = False
        self.sent: list[list[str]] = []
        self.lost: list[list[str]] = []
        self.senders: list[asyncio.Task[Any] | None] = []

    def lost_a_write(self) -> bool:
        return any(set(commands) - {"MGET"} for commands in self.lost)

    def pipeline(self, transaction: bool = True) -> FreezablePipeline:
        return FreezablePipeline(self, self.redis.pipeline(transaction=transaction))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.redis, name)


class FreezablePipeline:
    def __init__(self, owner: FreezableRedis, pipe: Any) -> None:
        self._owner = owner
        self._pipe = pipe

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def __len__(self) -> int:
        return len(self._pipe)

    async def __aenter__(self) -> FreezablePipeline:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._pipe.reset()

    async def execute(self) -> list[Any]:
        commands = [str(args[0]) for args, _ in self._pipe.command_stack]
        self._owner.senders.append(asyncio.current_task())
        if self._owner.frozen:
            try:
                await asyncio.Event().wait()  # no answer, ever
            finally:
                self._owner.lost.append(commands)
        self._owner.sent.append(commands)
        return cast(list[Any], await self._pipe.execute())


@dataclass
class SharedRedis:
    """One Redis the breakers of one account live in; `breakers()` is another process's view."""

    new_connection: Callable[[], Any]
    namespace: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex}")
    clients: list[BinanceClient] = field(default_factory=list)
    connections: list[Any] = field(default_factory=list)

    def connect(self) -> Any:
        connection = self.new_connection()
        self.connections.append(connection)
        return connection

    def breakers(self, connection: Any = None, **options: Any) -> Breakers:
        return Breakers(
            SETTINGS,
            client=cast(aioredis.Redis, connection or self.connect()),
            namespace=self.namespace,
            refresh_s=REFRESH_S,
            **options,
        )

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        for connection in self.connections:
            await connection.aclose()

    def client(self, breakers: Breakers, *, exchange_s: float = 0.0) -> tuple[BinanceClient, Exchange]:
        """A client on `breakers`; each exchange answer takes `exchange_s` (the loop runs meanwhile)."""
        exchange = Exchange(breakers)
        client = BinanceClient(
            "http://exchange.test",
            api_key="k",
            secret_key="s",
            transport=SlowTransport(exchange.handle, exchange_s),
            breakers=breakers,
        )
        self.clients.append(client)
        return client, exchange

    async def get(self, group: Group, name: str) -> str | None:
        """`name` of `group`'s breaker as stored in Redis (read on a connection of its own)."""
        raw = await self.connect().get(breaker_key(self.namespace, group, name))
        return None if raw is None else str(raw.decode())

    async def opened_at_s(self, breakers: Breakers) -> int:
        await breakers.sync()  # the trip's writes are in Redis
        raw = await self.get(Group.CREATE, "opened_at")
        assert raw is not None
        return int(raw)


class SlowTransport(HandlerTransport):
    def __init__(self, handler: Handler, seconds: float) -> None:
        super().__init__(handler)
        self._seconds = seconds

    async def send(self, method: str, path_and_query: str) -> HttpResponse:
        await asyncio.sleep(self._seconds)
        return await super().send(method, path_and_query)


@pytest.fixture
async def shared() -> AsyncIterator[SharedRedis]:
    server = fakeredis.FakeServer()
    shared = SharedRedis(lambda: FreezableRedis(server))
    yield shared
    await shared.close()


@pytest.fixture(params=["fakeredis", pytest.param("redis", marks=pytest.mark.integration)])
async def any_redis(request: pytest.FixtureRequest) -> AsyncIterator[SharedRedis]:
    """`shared`, on fakeredis and on the machine's Redis (a shared db: only the keys under this
    test's fresh namespace are written, and they are deleted after)."""
    if request.param == "fakeredis":
        server = fakeredis.FakeServer()
        shared = SharedRedis(lambda: fakeredis.FakeAsyncRedis(server=server))
    else:
        host, port = str(request.getfixturevalue("real_redis")).split(":")
        shared = SharedRedis(lambda: aioredis.Redis(host=host, port=int(port), db=redis_db(__name__)))
    admin = shared.connect()
    yield shared
    await delete_keys_under(admin, f"{shared.namespace}:")
    await shared.close()


async def eventually(condition: Callable[[], object], within_s: float) -> float:
    """Poll `condition` until it holds; returns how long that took, fails after `within_s`."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not condition():
        assert loop.time() - started < within_s, f"not within {within_s} s"
        await asyncio.sleep(0.005)
    return loop.time() - started


async def open_create_breaker(client: BinanceClient, exchange: Exchange) -> None:
    """Three timed-out POSTs: the third trips the breaker."""
    exchange.answers += [read_timeout] * SETTINGS.failure_threshold
    for _ in range(SETTINGS.failure_threshold):
        with pytest.raises(errors.OutcomeUnknown):
            await client.new_order(ORDER)


async def wait_out_the_timeout(shared: SharedRedis, breakers: Breakers) -> None:
    """Sleep until the open breaker's timeout has passed (pybreaker keeps whole seconds)."""
    delay = await shared.opened_at_s(breakers) + SETTINGS.timeout - time.time()
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
    # A sends its trip at once; B re-reads the shared state every REFRESH_S (plus its round trip)
    # without being asked. The bound is that period with a wide margin for a loaded machine: a B
    # that did not re-read on its own would never see the trip.
    await eventually(lambda: worker_b.state(Group.CREATE) == "open", within_s=REFRESH_S + SLACK_S)
    with pytest.raises(errors.CircuitOpen, match=OPEN_MESSAGE):
        await client_b.new_order(ORDER)
    assert exchange_b.requests == []
    exchange_b.answers.append(CANCELED)
    await client_b.cancel_order("BTCUSDT", "oe-1")  # another group, its own breaker
    assert len(exchange_b.requests) == 1


async def test_breakers_without_a_background_sync_read_the_shared_state_only_when_asked(
    shared: SharedRedis,
) -> None:
    """The gateway's AccountService client: no task re-reading Redis every REFRESH_S; it syncs
    around its own (rare) calls with try_sync."""
    worker = shared.breakers()
    client, exchange = shared.client(worker)
    rare = shared.breakers(sync_in_background=False)
    assert rare.state(Group.CREATE) == "closed"
    await open_create_breaker(client, exchange)
    await asyncio.sleep(REFRESH_S * 4)
    assert rare.state(Group.CREATE) == "closed"  # nothing read it on its own
    assert await rare.try_sync()
    assert rare.state(Group.CREATE) == "open"


async def test_faults_are_counted_in_redis_and_add_up_across_processes(shared: SharedRedis) -> None:
    worker_a, worker_b = shared.breakers(), shared.breakers()
    client_a, exchange_a = shared.client(worker_a)
    client_b, exchange_b = shared.client(worker_b)
    exchange_a.answers.append(read_timeout)
    with pytest.raises(errors.OutcomeUnknown):
        await client_a.new_order(ORDER)
    await worker_a.sync()
    assert await shared.get(Group.CREATE, "fail_counter") == "1"
    await worker_b.sync()  # B learns A's fault: two of its own now trip the breaker for everyone
    exchange_b.answers += [read_timeout, read_timeout]
    for _ in range(2):
        with pytest.raises(errors.OutcomeUnknown):
            await client_b.new_order(ORDER)
    assert worker_b.state(Group.CREATE) == "open"
    await worker_b.sync()
    assert await shared.get(Group.CREATE, "fail_counter") == "3"
    assert await shared.get(Group.CREATE, "state") == "open"
    assert int(await shared.get(Group.CREATE, "opened_at") or 0) == pytest.approx(time.time(), abs=2)


async def test_successes_in_the_closed_state_write_nothing_to_redis(shared: SharedRedis) -> None:
    connection = shared.connect()
    breakers = shared.breakers(connection)
    client, exchange = shared.client(breakers)
    exchange.answers += [NEW] * 3
    await client.new_order(ORDER)
    await breakers.sync()
    connection.sent.clear()
    for _ in range(2):
        await client.new_order(ORDER)
    await breakers.sync()
    # Every round trip since (the periodic ones and ours) only read the shared state.
    assert connection.sent and {command for sent in connection.sent for command in sent} == {"MGET"}


async def test_after_the_timeout_a_successful_trial_closes_it(shared: SharedRedis) -> None:
    breakers = shared.breakers()
    client, exchange = shared.client(breakers)
    await open_create_breaker(client, exchange)
    with pytest.raises(errors.CircuitOpen):
        await client.new_order(ORDER)
    await wait_out_the_timeout(shared, breakers)
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
    await wait_out_the_timeout(shared, breakers)
    exchange.answers.append(read_timeout)
    with pytest.raises(errors.ExchangeError) as caught:
        await client.new_order(ORDER)
    assert type(caught.value) is errors.OutcomeUnknown  # the trial POST may have executed
    assert exchange.create_states[-1] == "half-open"
    assert breakers.state(Group.CREATE) == "open"
    with pytest.raises(errors.CircuitOpen):
        await client.new_order(ORDER)
    assert len(exchange.requests) == 4


# --- a frozen Redis ---------------------------------------------------------------------


@dataclass
class Ticker:
    """Notes the loop's time every 10 ms: its longest gap is how long the event loop was held."""

    times: list[float] = field(default_factory=list)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.times.append(loop.time())
            await asyncio.sleep(0.01)

    def longest_gap_s(self) -> float:
        return max(b - a for a, b in zip(self.times, self.times[1:], strict=False))


async def test_a_frozen_redis_holds_neither_the_calls_nor_the_loop_and_syncing_resumes(
    shared: SharedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    connection = shared.connect()
    worker = shared.breakers(connection, sync_timeout_s=0.1)  # several rounds time out while frozen
    client, exchange = shared.client(worker, exchange_s=0.001)
    other = shared.breakers()  # another replica, its Redis answering
    await worker.sync()
    caplog.set_level(logging.WARNING, logger="order_execution.exchange.breakers")
    connection.frozen = True
    ticker = Ticker()
    ticking = asyncio.create_task(ticker.run())
    request_path = asyncio.current_task()  # the calls below run in this task
    connection.senders.clear()

    exchange.answers += [NEW] * 200
    started = time.perf_counter()
    for _ in range(200):
        await client.new_order(ORDER)
    took_s = time.perf_counter() - started
    # Faults while frozen still open the breaker here, at once, for this process.
    await open_create_breaker(client, exchange)
    with pytest.raises(errors.CircuitOpen):
        await client.new_order(ORDER)
    # Another replica opens the query breaker meanwhile: unseen here until Redis answers.
    other_client, other_exchange = shared.client(other)
    other_exchange.answers += [read_timeout] * SETTINGS.failure_threshold
    for _ in range(SETTINGS.failure_threshold):
        with pytest.raises(errors.ExchangeUnavailable):
            await other_client.query_order("BTCUSDT", "oe-1")
    sent_by_calls = [sender for sender in connection.senders if sender is request_path]
    await other.sync()
    await eventually(connection.lost_a_write, within_s=SLACK_S)  # a round with the trip timed out
    ticking.cancel()

    # What is checked is behaviour: no call sent a round trip to (so none waited on) the frozen
    # Redis; only the background sync did, and its rounds timed out. The two time bounds are
    # backstops with wide margins, as the suite runs on a loaded 2-core machine: a call that waited
    # for the sync timeout would make 200 calls take at least 20 s, and a frozen Redis never
    # answers, so a loop blocked on it would stay blocked (the gap is normally the 10 ms tick; 1 s is
    # far beyond what a busy scheduler takes from a runnable process).
    assert sent_by_calls == [], f"{len(sent_by_calls)} calls waited on the frozen Redis"
    assert took_s < 10.0, f"200 calls took {took_s:.2f} s with Redis frozen"
    assert ticker.longest_gap_s() < 1.0, f"the event loop was held {ticker.longest_gap_s():.3f} s"
    assert len(exchange.requests) == 203
    assert worker.state(Group.QUERY) == "closed"  # the last state it knew
    assert await shared.get(Group.CREATE, "state") == "closed"  # its trip is still held here
    outage_logs = [r for r in caplog.records if "does not answer" in r.getMessage()]
    assert len(outage_logs) == 1, "the outage is logged once, not once per round"

    connection.frozen = False
    await eventually(lambda: worker.state(Group.QUERY) == "open", within_s=REFRESH_S + SLACK_S)
    await eventually(lambda: other.state(Group.CREATE) == "open", within_s=2 * REFRESH_S + SLACK_S)
    assert await shared.get(Group.CREATE, "state") == "open"
    assert await shared.get(Group.CREATE, "fail_counter") == str(SETTINGS.failure_threshold)
    assert await shared.get(Group.CREATE, "opened_at") is not None
    assert any("answers again" in r.getMessage() for r in caplog.records)


async def test_closing_sends_the_writes_still_pending(shared: SharedRedis) -> None:
    connection = shared.connect()
    worker = shared.breakers(connection, sync_timeout_s=0.1)
    client, exchange = shared.client(worker)
    await worker.sync()
    connection.frozen = True
    await open_create_breaker(client, exchange)
    await eventually(connection.lost_a_write, within_s=SLACK_S)  # a round with the trip timed out
    connection.frozen = False
    await client.close()
    assert await shared.get(Group.CREATE, "state") == "open"
    assert await shared.get(Group.CREATE, "fail_counter") == str(SETTINGS.failure_threshold)


async def test_without_redis_the_breakers_are_per_process() -> None:
    breakers = Breakers(SETTINGS)
    for _ in range(SETTINGS.failure_threshold):
        with pytest.raises(errors.ExchangeUnavailable), breakers.guard(Group.CANCEL):
            raise errors.ExchangeUnavailable("HTTP 503")
    assert breakers.state(Group.CANCEL) == "open" and breakers.state(Group.CREATE) == "closed"
    await breakers.sync()  # nothing to sync with
    await breakers.aclose()
