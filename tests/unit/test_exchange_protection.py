"""The exchange client on a shared rate budget: what the exchange tells one client holds every client.

A scripted exchange (tests/exchange_double.py) answers; the budget is on fakeredis, each
client with its own connection as separate processes would be. Where the code waits, a
fake clock stands in for `now_ms` and `asyncio.sleep` in the client and the executor,
so a one-minute wait takes no time and the test can say exactly how long it was.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import fakeredis
import httpx
import pytest

import order_execution.exchange.signed_rest as exchange_signed_rest
import order_execution.workers.execution as workers_execution
from order_execution.exchange.client import BinanceClient
from order_execution.exchange.errors import BudgetExceeded, ExchangeError, RateLimited
from order_execution.exchange.rate_budget import RateBudget
from order_execution.orders.model import Order, OrderState, now_ms
from order_execution.orders.store import OrderStore
from order_execution.workers.execution import OrderExecutor
from tests.exchange_double import HandlerTransport
from tests.factories import make_order, outbox_orders

S = OrderState
Handler = Callable[[httpx.Request], httpx.Response]
MAX_ORDER_AGE_MS = 5000


def reply(status: int, body: object, headers: dict[str, str] | None = None) -> Handler:
    return lambda request: httpx.Response(status, content=json.dumps(body).encode(), headers=headers)


def order_object(status: str = "NEW", headers: dict[str, str] | None = None) -> Handler:
    return reply(200, {"status": status, "orderId": 99, "executedQty": "0", "avgPrice": "0"}, headers)


def too_many_requests(retry_after_s: int) -> Handler:
    body = {"code": -1003, "msg": "Too many requests; current limit of IP is 2400 requests per minute."}
    return reply(429, body, {"Retry-After": str(retry_after_s)})


def banned_until(until_ms: int) -> Handler:
    body = {
        "code": -1003,
        "msg": f"Way too many requests; IP banned until {until_ms}. "
        "Please use the websocket for live updates to avoid bans.",
    }
    return reply(418, body, {"Retry-After": "120"})


def param(request: httpx.Request, name: str) -> str:
    return request.url.params[name]


class Exchange:
    """Scripted exchange: `answers` are popped per request; every request is recorded."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.answers: list[Handler] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answers.pop(0)(request)

    def posts(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "POST"]


@dataclass
class FakeClock:
    """Unix ms that move only when the code under test sleeps."""

    ms: int
    slept_ms: list[int] = field(default_factory=list)

    def now_ms(self) -> int:
        return self.ms

    async def sleep(self, seconds: float) -> None:
        self.slept_ms.append(round(seconds * 1000))
        self.ms += round(seconds * 1000)
        await asyncio.sleep(0)

    @property
    def minute_end(self) -> int:
        return self.ms - self.ms % 60_000 + 60_000


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """A clock one second into the next minute, standing in for the client's and executor's."""
    now = now_ms()
    fake = FakeClock(now - now % 60_000 + 61_000)
    for module in (exchange_signed_rest, workers_execution):
        monkeypatch.setattr(module, "now_ms", fake.now_ms)
        monkeypatch.setattr(module, "asyncio", SimpleNamespace(sleep=fake.sleep))
    return fake


@dataclass
class Account:
    """One account's Redis, exchange, and a way to start another process's client on them."""

    server: fakeredis.FakeServer
    exchange: Exchange
    clients: list[BinanceClient] = field(default_factory=list)
    connections: list[fakeredis.FakeAsyncRedis] = field(default_factory=list)

    def redis(self) -> fakeredis.FakeAsyncRedis:
        connection = fakeredis.FakeAsyncRedis(server=self.server)
        self.connections.append(connection)
        return connection

    def budget(self) -> RateBudget:
        return RateBudget(self.redis())

    def client(
        self,
        budget: RateBudget | None = None,
        *,
        handler: Callable[[httpx.Request], httpx.Response] | None = None,
    ) -> BinanceClient:
        """A client on the account's budget, talking to `handler` (default: the scripted exchange)."""
        client = BinanceClient(
            "http://exchange.test",
            api_key="k",
            secret_key="s",
            transport=HandlerTransport(handler or self.exchange.handle),
            budget=budget or self.budget(),
        )
        self.clients.append(client)
        return client

    def executor(self, client: BinanceClient) -> tuple[OrderExecutor, OrderStore]:
        async def schedule(order: Order, attempt: int, delay_ms: int) -> None:
            raise AssertionError("nothing here should need reconciling")

        store = OrderStore(self.redis())
        return OrderExecutor(
            store=store, exchange=client, max_order_age_ms=MAX_ORDER_AGE_MS, schedule_reconcile=schedule
        ), store


@pytest.fixture
async def account() -> AsyncIterator[Account]:
    account = Account(fakeredis.FakeServer(), Exchange())
    yield account
    for client in account.clients:
        await client.close()
    for connection in account.connections:
        await connection.aclose()


# --- headers: what other clients spent ----------------------------------------------


async def test_weight_another_client_spent_holds_our_next_request_until_the_minute_ends(
    account: Account, clock: FakeClock
) -> None:
    budget = account.budget()
    client = account.client(budget)
    start, minute_end = clock.ms, clock.minute_end
    account.exchange.answers += [order_object(headers={"X-MBX-USED-WEIGHT-1M": "2100"}), order_object()]
    await client.query_order("BTCUSDT", "oe-1")
    assert (await budget.state(at_ms=clock.ms)).weight_used == 2100  # ours was 1
    # 2101 is over 2400 x 0.9 x 0.8: the minute ends in 59 s, longer than a query may wait
    # (10 s), so it fails at once, unsent, rather than holding its caller for a minute.
    with pytest.raises(BudgetExceeded) as caught:
        await client.query_order("BTCUSDT", "oe-1")
    assert caught.value.wait_ms == minute_end - start
    assert clock.slept_ms == [] and len(account.exchange.requests) == 1
    clock.ms = minute_end - 5_000  # 5 s before the minute ends: worth waiting for
    await client.query_order("BTCUSDT", "oe-1")
    assert clock.slept_ms == [5_000] and len(account.exchange.requests) == 2
    assert int(param(account.exchange.requests[1], "timestamp")) >= minute_end


async def test_weight_another_client_spent_holds_creates_past_their_deadline_unsent(
    account: Account, clock: FakeClock
) -> None:
    """The IP is out of weight: a create (weight 0 itself) sent now would earn a 429 and a strike."""
    client = account.client()
    account.exchange.answers += [order_object(headers={"X-MBX-USED-WEIGHT-1M": "2100"}), order_object()]
    await client.query_order("BTCUSDT", "oe-1")
    with pytest.raises(BudgetExceeded) as caught:
        await client.new_order(make_order(), deadline_ms=clock.ms + MAX_ORDER_AGE_MS)
    assert caught.value.wait_ms == clock.minute_end - clock.ms
    assert "REQUEST_WEIGHT per minute" in str(caught.value)
    assert account.exchange.posts() == []


async def test_order_counts_in_the_headers_hold_creates_past_their_deadline_unsent(
    account: Account, clock: FakeClock
) -> None:
    client = account.client()
    counts = {"X-MBX-ORDER-COUNT-10S": "250", "X-MBX-ORDER-COUNT-1M": "260"}
    account.exchange.answers.append(order_object(headers=counts))
    await client.new_order(make_order(order_id="o0", client_order_id="oe-0"))
    with pytest.raises(BudgetExceeded) as caught:  # 251 is over 300 x 0.9 x 0.8
        await client.new_order(make_order(), deadline_ms=clock.ms + MAX_ORDER_AGE_MS)
    ten_s_end = clock.ms - clock.ms % 10_000 + 10_000
    assert caught.value.wait_ms == ten_s_end - clock.ms and "ORDERS per 10 s" in str(caught.value)
    assert len(account.exchange.posts()) == 1


# --- 429 and 418: everyone holds off --------------------------------------------------


async def test_429_blocks_every_client_sharing_the_budget(account: Account, clock: FakeClock) -> None:
    first, other_budget = account.client(), account.budget()
    second = account.client(other_budget)
    account.exchange.answers.append(too_many_requests(retry_after_s=1))
    with pytest.raises(RateLimited):
        await first.query_order("BTCUSDT", "oe-1")
    state = await other_budget.state(at_ms=clock.ms)
    assert state.blocked_until_ms == clock.ms + 1000 and state.blocked_reason.startswith("429")

    with pytest.raises(BudgetExceeded) as caught:
        await second.new_order(make_order(), deadline_ms=clock.ms + 500)
    assert caught.value.wait_ms == 1000 and len(account.exchange.requests) == 1

    account.exchange.answers.append(order_object())
    await second.query_order("BTCUSDT", "oe-1")
    assert clock.slept_ms == [1000] and len(account.exchange.requests) == 2


async def test_429_on_the_post_sends_it_again_after_the_wait_with_the_same_client_id(
    account: Account, clock: FakeClock
) -> None:
    executor, store = account.executor(account.client())
    order = (await store.create(make_order(created_at=clock.ms))).order
    blocked_at = clock.ms
    account.exchange.answers += [too_many_requests(retry_after_s=1), order_object("NEW")]
    await executor.submit(order.order_id)
    stored = await store.get(order.order_id)
    assert stored.state is S.SUBMITTED
    posts = account.exchange.posts()
    assert len(posts) == 2
    assert {param(p, "newClientOrderId") for p in posts} == {order.client_order_id}
    assert int(param(posts[1], "timestamp")) >= blocked_at + 1000
    states = [o.state for o in await outbox_orders(account.redis())]
    assert S.REJECTED not in states and states[-1] is S.SUBMITTED


async def test_418_ban_holds_every_client_until_it_ends(account: Account, clock: FakeClock) -> None:
    first, other_budget = account.client(), account.budget()
    second = account.client(other_budget)
    until = clock.ms + 120_000
    account.exchange.answers.append(banned_until(until))
    with pytest.raises(RateLimited):
        await first.query_order("BTCUSDT", "oe-1")
    state = await other_budget.state(at_ms=clock.ms)
    assert state.blocked_until_ms == until
    assert state.blocked_reason == f"418: IP banned by the exchange until {until}"
    with pytest.raises(BudgetExceeded) as caught:
        await second.new_order(make_order(), deadline_ms=clock.ms + MAX_ORDER_AGE_MS)
    assert caught.value.wait_ms == 120_000 and len(account.exchange.requests) == 1


async def test_418_on_the_post_expires_the_order_unsent(account: Account, clock: FakeClock) -> None:
    executor, store = account.executor(account.client())
    order = (await store.create(make_order(created_at=clock.ms))).order
    account.exchange.answers.append(banned_until(clock.ms + 120_000))
    await executor.submit(order.order_id)
    stored = await store.get(order.order_id)
    assert stored.state is S.EXPIRED and "max_order_age_ms" in stored.reject_reason
    assert len(account.exchange.posts()) == 1


async def test_429_block_is_kept_on_the_exchange_clock(account: Account, clock: FakeClock) -> None:
    """Budget windows and blocks run on exchange time; a Retry-After must be counted on it too."""
    first, second = account.client(), account.client()
    for client in (first, second):
        client.clock_offset_ms = 3000  # sync_clock measured the exchange 3 s ahead of us
    account.exchange.answers += [too_many_requests(retry_after_s=1), order_object()]
    with pytest.raises(RateLimited):
        await first.query_order("BTCUSDT", "oe-1")
    await second.query_order("BTCUSDT", "oe-1")
    assert clock.slept_ms == [1000]  # held for the Retry-After, not sent at once into another 429


# --- the clock ------------------------------------------------------------------------


class SkewedExchange:
    """An exchange whose clock runs `ahead_ms` ahead of ours and enforces recvWindow as Binance does."""

    def __init__(self, ahead_ms: int, *, time_failures: int = 0) -> None:
        self.ahead_ms = ahead_ms
        self.time_failures = time_failures  # the first GET /fapi/v1/time calls answer 503
        self.requests: list[tuple[httpx.Request, int]] = []  # with the exchange's time on arrival

    def handle(self, request: httpx.Request) -> httpx.Response:
        server_now = now_ms() + self.ahead_ms
        self.requests.append((request, server_now))
        if request.url.path == "/fapi/v1/time" and self.time_failures:
            self.time_failures -= 1
            return httpx.Response(503, json={"code": -1001, "msg": "Service Unavailable."})
        if request.url.path == "/fapi/v1/time":
            return httpx.Response(200, json={"serverTime": server_now})
        timestamp, window = int(param(request, "timestamp")), int(param(request, "recvWindow"))
        if not server_now - window <= timestamp <= server_now + 1000:
            body = {"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."}
            return httpx.Response(400, json=body)
        return order_object("NEW")(request)


async def test_clock_skew_resyncs_and_sends_again_on_the_new_clock(account: Account) -> None:
    skewed = SkewedExchange(ahead_ms=10_000)  # our clock jumped 10 s back
    client = account.client(handler=skewed.handle)
    executor, store = account.executor(client)
    order = (await store.create(make_order())).order
    await executor.submit(order.order_id)
    assert (await store.get(order.order_id)).state is S.SUBMITTED
    paths = [(r.method, r.url.path) for r, _ in skewed.requests]
    assert paths == [("POST", "/fapi/v1/order"), *[("GET", "/fapi/v1/time")] * 5, ("POST", "/fapi/v1/order")]
    assert abs(client.clock_offset_ms - 10_000) <= 50
    resent, arrived = skewed.requests[-1]
    assert abs(int(param(resent, "timestamp")) - arrived) <= 1000
    assert param(resent, "newClientOrderId") == order.client_order_id


async def test_a_resync_that_fails_once_is_retried_within_the_age_budget(account: Account) -> None:
    """The exchange refused before execution and then would not tell its time: still safe to retry."""
    skewed = SkewedExchange(ahead_ms=10_000, time_failures=1)
    client = account.client(handler=skewed.handle)
    executor, store = account.executor(client)
    order = (await store.create(make_order())).order
    try:
        await executor.submit(order.order_id)
    except ExchangeError as exc:
        state = (await store.get(order.order_id)).state
        pytest.fail(f"submit raised {exc!r} from the clock resync and left the order {state}")
    assert (await store.get(order.order_id)).state is S.SUBMITTED
    posts = [r for r, _ in skewed.requests if r.method == "POST"]
    assert {param(r, "newClientOrderId") for r in posts} == {order.client_order_id}


async def test_sync_clock_takes_the_median_of_five_samples(account: Account) -> None:
    offsets = iter([200, 300, 9000, 250, 100])  # one sample caught a long pause

    def server_time(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"serverTime": now_ms() + next(offsets)})

    account.exchange.answers += [server_time] * 5
    client = account.client()
    offset = await client.sync_clock()
    assert abs(offset - 250) <= 20 and client.clock_offset_ms == offset
    assert [r.url.path for r in account.exchange.requests] == ["/fapi/v1/time"] * 5
    assert client.exchange_now_ms() - now_ms() == pytest.approx(offset, abs=5)
