"""The shared rate budget: one Lua round trip charges every limit at once, or nothing.

Every test that touches Redis runs twice: on fakeredis and on the machine's Redis (its
namespaced db, see tests/redis_dbs.py: the keys are under a fresh namespace, deleted after),
each budget on its own connection, as two processes would be. Times are `at_ms` values
in the next minute, so every window is known and every key expires in the future.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import fakeredis
import pytest
import redis.asyncio as aioredis

from order_execution.exchange.rate_budget import Cost, ExchangeLimits, Grant, Priority, RateBudget
from order_execution.orders.model import now_ms
from tests.redis_dbs import delete_keys_under, redis_db

CREATE, CANCEL, QUERY = Priority.CREATE, Priority.CANCEL, Priority.QUERY
NEW_ORDER = Cost(weight=0, orders=1)  # what POST /fapi/v1/order spends
ONE = Cost(weight=1)  # a cancel or a query
OPEN_ORDERS = Cost(weight=40)  # GET /fapi/v1/openOrders without a symbol
REAL_REDIS_DB = redis_db(__name__)

Budgets = Callable[..., RateBudget]


def next_minute() -> int:
    """The start of the next minute (Unix ms): windows line up on it."""
    now = now_ms()
    return now - now % 60_000 + 60_000


async def spend(budget: RateBudget, cost: Cost, priority: Priority, *, at_ms: int, most: int) -> int:
    """How many `cost`s the budget grants at `at_ms` before its first refusal (at most `most`)."""
    for granted in range(most):
        if (await budget.acquire(cost, priority, at_ms=at_ms)).wait_ms:
            return granted
    return most


@pytest.fixture(params=["fakeredis", pytest.param("redis", marks=pytest.mark.integration)])
async def budgets(request: pytest.FixtureRequest) -> AsyncIterator[Budgets]:
    """Make budgets of one account, each on its own connection to one Redis (fake or real)."""
    connect: Callable[[], aioredis.Redis]
    if request.param == "redis":
        host, port = str(request.getfixturevalue("real_redis")).split(":")

        def connect() -> aioredis.Redis:
            return aioredis.Redis(host=host, port=int(port), db=REAL_REDIS_DB)

    else:
        server = fakeredis.FakeServer()

        def connect() -> aioredis.Redis:
            return fakeredis.FakeAsyncRedis(server=server)

    admin = connect()
    clients = [admin]
    namespace = f"test-{uuid.uuid4().hex}"  # the db is shared: never flushed, only these keys go

    def make(**options: Any) -> RateBudget:
        client = connect()
        clients.append(client)
        return RateBudget(client, namespace=namespace, **options)

    yield make
    await delete_keys_under(admin, f"{namespace}:")
    for client in clients:
        await client.aclose()


async def test_the_bucket_grants_the_burst_then_one_request_per_interval(budgets: Budgets) -> None:
    budget = budgets(requests_per_second=10, burst=20)
    t = next_minute() + 1000
    assert await spend(budget, ONE, CANCEL, at_ms=t, most=25) == 20
    assert await budget.acquire(ONE, CANCEL, at_ms=t) == Grant(100, "requests_per_second")
    assert 0 < (await budget.acquire(ONE, CANCEL, at_ms=t + 90)).wait_ms <= 10
    assert (await budget.acquire(ONE, CANCEL, at_ms=t + 100)).wait_ms == 0
    assert (await budget.acquire(ONE, CANCEL, at_ms=t + 100)).wait_ms == 100


@pytest.mark.parametrize(("cost", "priority"), [(NEW_ORDER, CREATE), (ONE, QUERY)])
async def test_creates_and_queries_stop_at_the_cancel_reserve_and_cancels_still_go_out(
    budgets: Budgets, cost: Cost, priority: Priority
) -> None:
    budget = budgets(requests_per_second=10, burst=20, cancel_reserve=0.2)
    t = next_minute() + 1000
    assert await spend(budget, cost, priority, at_ms=t, most=25) == 16  # 20 less the reserve of 4
    assert await budget.acquire(cost, priority, at_ms=t) == Grant(100, "requests_per_second")
    assert await spend(budget, ONE, CANCEL, at_ms=t, most=10) == 4  # the reserve is the cancels'
    assert await budget.acquire(ONE, CANCEL, at_ms=t) == Grant(100, "requests_per_second")


async def test_orders_windows_refuse_until_the_window_ends_naming_it(budgets: Budgets) -> None:
    budget = budgets(
        requests_per_second=1000,
        burst=1000,
        safety_margin=0.9,
        cancel_reserve=0.2,
        limits=ExchangeLimits(orders_per_10s=50, orders_per_minute=100),
    )
    minute = next_minute()
    # 50 x 0.9 margin x 0.8 left after the cancel reserve = 36 per 10 s; 100 x 0.72 = 72 per minute.
    assert await spend(budget, NEW_ORDER, CREATE, at_ms=minute + 1000, most=50) == 36
    assert await budget.acquire(NEW_ORDER, CREATE, at_ms=minute + 1000) == Grant(9000, "ORDERS per 10 s")
    assert await spend(budget, NEW_ORDER, CREATE, at_ms=minute + 10_000, most=50) == 36
    # A fresh 10 s window, but the minute is spent: wait for the minute to end.
    refused = await budget.acquire(NEW_ORDER, CREATE, at_ms=minute + 20_000)
    assert refused == Grant(40_000, "ORDERS per minute")
    assert (await budget.acquire(NEW_ORDER, CREATE, at_ms=minute + 60_000)).wait_ms == 0


async def test_request_weight_per_minute_counts_endpoint_weights(budgets: Budgets) -> None:
    budget = budgets(
        requests_per_second=1000, burst=1000, safety_margin=0.9, limits=ExchangeLimits(weight_per_minute=1000)
    )
    minute = next_minute()
    t = minute + 5000
    # Queries get 1000 x 0.9 x 0.8 = 720 of weight: 18 openOrders calls.
    assert await spend(budget, OPEN_ORDERS, QUERY, at_ms=t, most=30) == 18
    assert await budget.acquire(OPEN_ORDERS, QUERY, at_ms=t) == Grant(55_000, "REQUEST_WEIGHT per minute")
    # Cancels may use the rest of the 900: exactly up to it, and not one more.
    assert (await budget.acquire(Cost(weight=180), CANCEL, at_ms=t)).wait_ms == 0
    assert (await budget.state(at_ms=t)).weight_used == 900
    assert await budget.acquire(ONE, CANCEL, at_ms=t) == Grant(55_000, "REQUEST_WEIGHT per minute")
    assert (await budget.acquire(OPEN_ORDERS, QUERY, at_ms=minute + 60_000)).wait_ms == 0


async def test_a_refused_acquire_charges_nothing(budgets: Budgets) -> None:
    budget = budgets(
        requests_per_second=10, burst=20, limits=ExchangeLimits(weight_per_minute=100, orders_per_10s=100)
    )
    t = next_minute() + 1000
    heavy_order = Cost(weight=30, orders=1)
    assert (await budget.acquire(heavy_order, CREATE, at_ms=t)).wait_ms == 0
    assert (await budget.acquire(heavy_order, CREATE, at_ms=t)).wait_ms == 0
    before = await budget.state(at_ms=t)
    assert (before.weight_used, before.orders_10s, before.orders_1m, before.tokens) == (60, 2, 2, 18)
    refused = await budget.acquire(heavy_order, CREATE, at_ms=t)  # 90 > 72 of weight
    assert refused.limited_by == "REQUEST_WEIGHT per minute"
    assert await budget.state(at_ms=t) == before  # no token, no weight, no order spent

    await budget.acquire(Cost(weight=0), CANCEL, at_ms=t)  # drain the bucket down to below one token
    for _ in range(17):
        await budget.acquire(Cost(weight=0), CANCEL, at_ms=t)
    drained = await budget.state(at_ms=t)
    assert drained.tokens < 1
    refused = await budget.acquire(Cost(weight=1, orders=1), CREATE, at_ms=t)
    assert refused.limited_by == "requests_per_second"
    assert await budget.state(at_ms=t) == drained


async def test_two_budgets_on_one_redis_share_one_budget(budgets: Budgets) -> None:
    """What one process spends, another cannot: the counters live in Redis, not in the process."""
    limits = ExchangeLimits(orders_per_10s=10)
    first = budgets(requests_per_second=10, burst=10, cancel_reserve=0.0, safety_margin=1.0, limits=limits)
    second = budgets(requests_per_second=10, burst=10, cancel_reserve=0.0, safety_margin=1.0, limits=limits)
    t = next_minute() + 1000
    assert await spend(first, NEW_ORDER, CREATE, at_ms=t, most=6) == 6
    assert await spend(second, NEW_ORDER, CREATE, at_ms=t, most=10) == 4
    assert (await first.acquire(ONE, CANCEL, at_ms=t)).wait_ms == 100
    assert (await second.state(at_ms=t)).orders_10s == 10
    # At the 10 s boundary the bucket has refilled, but the window says which limit holds.
    assert await first.acquire(NEW_ORDER, CREATE, at_ms=t + 8999) == Grant(1, "ORDERS per 10 s")
    assert (await second.acquire(NEW_ORDER, CREATE, at_ms=t + 9000)).wait_ms == 0


async def test_correct_raises_counters_to_the_headers_and_never_lowers_them(budgets: Budgets) -> None:
    budget = budgets()
    minute = next_minute()
    t = minute + 5000
    assert (await budget.acquire(Cost(weight=10), CANCEL, at_ms=t)).wait_ms == 0
    await budget.correct(weight_1m=2100, orders_10s=120, orders_1m=400, at_ms=t, answered_ms=t + 30)
    state = await budget.state(at_ms=t)
    assert (state.weight_used, state.orders_10s, state.orders_1m) == (2100, 120, 400)

    await budget.correct(weight_1m=5, orders_10s=None, orders_1m=3, at_ms=t + 40, answered_ms=t + 60)
    state = await budget.state(at_ms=t + 60)
    assert (state.weight_used, state.orders_10s, state.orders_1m) == (2100, 120, 400)

    # What another client spent is now ours to respect: 2100 + 61 is over 2400 x 0.9.
    refused = await budget.acquire(Cost(weight=61), CANCEL, at_ms=t)
    assert refused == Grant(55_000, "REQUEST_WEIGHT per minute")
    assert (await budget.acquire(Cost(weight=60), CANCEL, at_ms=t)).wait_ms == 0
    # The next minute starts from nothing.
    assert (await budget.state(at_ms=minute + 60_000)).weight_used == 0


async def test_header_figures_near_a_window_edge_are_not_trusted(budgets: Budgets) -> None:
    """A count the exchange made in the previous window must not fill the new one."""
    budget = budgets()
    minute = next_minute()
    await budget.correct(
        weight_1m=2100, orders_10s=None, orders_1m=None, at_ms=minute - 100, answered_ms=minute + 50
    )
    await budget.correct(
        weight_1m=2100, orders_10s=None, orders_1m=None, at_ms=minute + 100, answered_ms=minute + 130
    )
    assert (await budget.state(at_ms=minute - 1)).weight_used == 0
    assert (await budget.state(at_ms=minute + 130)).weight_used == 0
    # 100 ms into a 10 s window but well inside the minute: only the minute's figure is used.
    t = minute + 10_100
    await budget.correct(weight_1m=None, orders_10s=120, orders_1m=400, at_ms=t, answered_ms=t + 30)
    state = await budget.state(at_ms=t + 30)
    assert (state.orders_10s, state.orders_1m) == (0, 400)


async def test_block_holds_every_budget_until_the_time_and_only_ever_extends(budgets: Budgets) -> None:
    first, second = budgets(), budgets()
    t = next_minute() + 1000
    await first.block(t + 5000, "429: request rate over the exchange's limit")
    tokens = (await first.state(at_ms=t)).tokens
    for budget in (first, second):
        assert await budget.acquire(ONE, CANCEL, at_ms=t) == Grant(5000, "blocked")
    assert (await second.state(at_ms=t)).tokens == tokens  # a blocked acquire spends nothing

    await second.block(t + 1000, "a shorter block")
    state = await first.state(at_ms=t)
    assert state.blocked_until_ms == t + 5000 and state.blocked_reason.startswith("429")

    await second.block(t + 120_000, "418: IP banned by the exchange")
    state = await first.state(at_ms=t)
    assert state.blocked_until_ms == t + 120_000 and state.blocked_reason.startswith("418")
    assert await first.acquire(NEW_ORDER, CREATE, at_ms=t + 6000) == Grant(114_000, "blocked")
    assert (await first.acquire(ONE, CANCEL, at_ms=t + 120_000)).wait_ms == 0
    assert (await second.state(at_ms=t + 120_000)).blocked_until_ms == 0


def test_exchange_limits_from_binance_rate_limits_rows() -> None:
    rows: list[dict[str, Any]] = [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
        {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 600},
        {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200_000},
        {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61_000},
    ]
    assert ExchangeLimits.from_exchange_info(rows) == ExchangeLimits(
        weight_per_minute=6000, orders_per_10s=600, orders_per_minute=2400
    )
    assert ExchangeLimits.from_exchange_info([]) == ExchangeLimits(2400, 300, 1200)


async def test_saved_limits_load_in_another_process_and_budget_by_them(budgets: Budgets) -> None:
    worker, gateway = budgets(), budgets()
    assert await gateway.load_limits() == ExchangeLimits()  # Binance's defaults until a worker saves
    vip = ExchangeLimits(weight_per_minute=6000, orders_per_10s=600, orders_per_minute=2400)
    await worker.save_limits(vip)
    assert await gateway.load_limits() == vip and gateway.limits == vip
    # 2400 of weight is over the default's 2160 for a cancel, within 6000 x 0.9.
    t = next_minute() + 1000
    assert (await gateway.acquire(Cost(weight=2400), CANCEL, at_ms=t)).wait_ms == 0
