"""Observability per exchange account, on fakeredis: the cluster gauges read each account's queues,
orders and budget (and each venue's breakers), /health shows each account's budget and pings each
venue, and CreateOrder counts under the order's account."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any, cast

import fakeredis
import grpc
import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from order_execution.exchange.account import breaker_namespaces, rate_budget, venues
from order_execution.exchange.breakers import Group, breaker_key
from order_execution.exchange.rate_budget import Cost, Priority, RateBudget
from order_execution.gateway.cluster_gauges import ClusterGauges
from order_execution.gateway.health import HealthChecks
from order_execution.launcher.processes import free_port
from order_execution.orders import metrics
from order_execution.orders.listener_status import ListenerStatus
from order_execution.orders.model import now_ms
from order_execution.orders.store import OrderStore
from order_execution.proto import order_pb2_grpc
from order_execution.runtime.settings import AccountSettings, Settings
from order_execution.tasks.queues import queue_for, queue_key
from tests.factories import make_order
from tests.unit.gateway_harness import limit_order, serving_gateway

BLOCKED_UNTIL_S = 30


def accounts_settings(*names: str, base_urls: dict[str, str] | None = None) -> Settings:
    """The accounts `names`, each with its own key (so its own budget), on `base_urls`' venues."""
    urls = base_urls or {}
    return Settings(
        symbols=["BTCUSDT", "ETHUSDT"],
        accounts=[
            AccountSettings(
                name=name, api_key=f"key-{name}", secret_key=f"secret-{name}", base_url=urls.get(name, "")
            )
            for name in names
        ],
    )


def budgets_of(client: fakeredis.FakeAsyncRedis, settings: Settings) -> dict[str, RateBudget]:
    budgets = {account.name: rate_budget(client, settings, account) for account in settings.trading_accounts}
    return {name: budget for name, budget in budgets.items() if budget is not None}


def health_checks(
    client: fakeredis.FakeAsyncRedis, settings: Settings, budgets: dict[str, RateBudget] | None = None
) -> HealthChecks:
    """The gateway's health checks of `settings` with `budgets` (none: rate limits off); no
    trading rules nor listener (the checks here read neither)."""
    return HealthChecks(
        settings, OrderStore.from_settings(client, settings), cast(Any, None), cast(Any, None), budgets or {}
    )


def gauge(metric: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(metric, labels)


async def test_the_cluster_gauges_show_each_accounts_queues_orders_budget_and_each_venues_breakers() -> None:
    settings = accounts_settings("a", "b", base_urls={"b": "https://other-venue.example"})
    metrics.set_accounts(settings.account_names)
    client = fakeredis.FakeAsyncRedis()
    store = OrderStore.from_settings(client, settings)
    budgets = budgets_of(client, settings)
    for _ in range(3):  # three orders sent on a: its ORDERS windows, not b's
        assert not (await budgets["a"].acquire(Cost(weight=1, orders=1), Priority.CREATE)).wait_ms
    await budgets["b"].block(now_ms() + BLOCKED_UNTIL_S * 1000, "429: request rate over the exchange's limit")
    await client.rpush(queue_key(queue_for("ETHUSDT", "b")), "m1", "m2")
    await client.rpush(queue_key(queue_for("BTCUSDT", "a")), "m3")
    for n, account in enumerate(("a", "b", "b", "gone")):  # "gone": an account no longer configured
        await store.create(make_order(order_id=f"o{n}", client_order_id=f"oe-{n}", account=account))
    a_venue, b_venue = breaker_namespaces(settings)
    await client.set(breaker_key(b_venue, Group.CREATE), "open")
    await client.set(breaker_key(a_venue, Group.CANCEL), "half-open")
    status = ListenerStatus(client, namespace=settings.redis.namespace)
    await status.publish({"leader": "l1", "user_stream": "connected"}, ttl_ms=5000, account="b")

    gauges = ClusterGauges(
        store,
        status,
        settings.symbols,
        accounts=settings.account_names,
        budgets=budgets,
        breaker_namespaces=breaker_namespaces(settings),
    )
    await gauges.refresh()

    depth = "order_execution_queue_depth"
    assert (
        gauge(depth, account="b", symbol="ETHUSDT") == 2 and gauge(depth, account="a", symbol="BTCUSDT") == 1
    )
    assert (
        gauge(depth, account="a", symbol="ETHUSDT") == 0 and gauge(depth, account="b", symbol="BTCUSDT") == 0
    )
    state = "order_execution_orders_by_state"
    assert {account: gauge(state, state="NEW", account=account) for account in ("a", "b", "other")} == {
        "a": 1,
        "b": 2,
        "other": 1,
    }
    used, limit = "order_execution_rate_budget_used", "order_execution_rate_budget_limit"
    assert (
        gauge(used, window="orders_10s", account="a") == 3
        and gauge(used, window="orders_10s", account="b") == 0
    )
    assert gauge(used, window="orders_1m", account="a") == 3
    assert (
        gauge(limit, window="orders_10s", account="a")
        == gauge(limit, window="orders_10s", account="b")
        == 270
    )
    remaining = gauge("order_execution_rate_budget_remaining", window="orders_10s", account="a")
    assert remaining == 270 - 3
    blocked_b = gauge("order_execution_exchange_block_seconds", account="b")
    assert blocked_b is not None and BLOCKED_UNTIL_S - 2 < blocked_b <= BLOCKED_UNTIL_S
    assert gauge("order_execution_exchange_block_seconds", account="a") == 0
    assert gauge("order_execution_exchange_banned", account="b") == 0  # a 429, not a 418 ban
    # b is led and its stream up; nobody leads a.
    assert gauge("order_execution_listener_leading", account="b") == 1
    assert gauge("order_execution_user_stream_connected", account="b") == 1
    assert gauge("order_execution_listener_leading", account="a") == 0
    assert gauge("order_execution_user_stream_connected", account="a") == 0
    # A breaker's gauge keeps its one label: each group's worst state among the venues.
    breaker = "order_execution_circuit_breaker_state"
    assert gauge(breaker, name=str(Group.CREATE)) == 2  # open on b's venue
    assert gauge(breaker, name=str(Group.CANCEL)) == 1  # half-open on a's
    assert gauge(breaker, name=str(Group.QUERY)) == 0
    await client.aclose()


async def test_health_has_an_entry_per_accounts_budget_and_is_unhealthy_while_one_is_blocked() -> None:
    settings = accounts_settings("a", "b")
    client = fakeredis.FakeAsyncRedis()
    budgets = budgets_of(client, settings)
    checks = health_checks(client, settings, budgets)
    assert not (await budgets["b"].acquire(Cost(weight=1, orders=1), Priority.CREATE)).wait_ms
    healthy = (await checks.all())["rate_limits"]
    assert healthy["status"] == "healthy"
    # The weight is the egress IP's (both send from the default egress); the orders each account's.
    # b's request token refills while the check runs (19.1 on a slow machine): its tenth is not judged.
    assert re.fullmatch(
        r"a: weight 1/2400 per minute, orders 0/300 per 10 s, 0/1200 per minute, 20\.0/20 request tokens; "
        r"b: weight 1/2400 per minute, orders 1/300 per 10 s, 1/1200 per minute, 19\.\d/20 request tokens",
        str(healthy["message"]),
    ), healthy["message"]
    accounts = healthy["accounts"]
    assert isinstance(accounts, dict) and list(accounts) == ["a", "b"]
    assert accounts["b"]["orders_10s"] == {"used": 1, "limit": 270, "exchange_limit": 300}
    assert accounts["b"]["orders_1m"] == {"used": 1, "limit": 1080, "exchange_limit": 1200}
    assert accounts["a"]["status"] == "healthy" and accounts["a"]["blocked"] is False

    until = now_ms() + 60_000
    await budgets["b"].block(until, "429: request rate over the exchange's limit")
    blocked = (await checks.all())["rate_limits"]
    await checks.close()
    assert blocked["status"] == "unhealthy"
    assert blocked["message"] == (
        "every replica holds off sending for account b: 429: request rate over the exchange's limit"
    )
    accounts = blocked["accounts"]
    assert isinstance(accounts, dict)
    assert accounts["a"]["status"] == "healthy" and accounts["a"]["blocked"] is False
    assert accounts["b"]["status"] == "unhealthy" and accounts["b"]["blocked"] is True
    assert accounts["b"]["blocked_until_ms"] == until and accounts["b"]["reason"].startswith("429")


async def test_one_default_account_keeps_the_rate_limits_message_and_has_its_entry() -> None:
    settings = Settings()
    client = fakeredis.FakeAsyncRedis()
    budgets = budgets_of(client, settings)
    checks = health_checks(client, settings, budgets)
    assert (await checks.all())["rate_limits"]["message"] == (
        "weight 0/2400 per minute, orders 0/300 per 10 s, 0/1200 per minute, 20.0/20 request tokens"
    )
    await budgets["default"].block(now_ms() + 60_000, "418: IP banned by the exchange until 1", whole_ip=True)
    banned = (await checks.all())["rate_limits"]
    assert banned["status"] == "unhealthy"
    assert banned["message"] == "every replica holds off sending: 418: IP banned by the exchange until 1"
    assert list(banned["accounts"]) == ["default"]  # type: ignore[call-overload]
    off = health_checks(client, settings)
    assert (await off.all())["rate_limits"]["message"] == "off (rate_limit.enabled: false)"
    await checks.close()
    await off.close()


@pytest.fixture
async def venue() -> AsyncIterator[str]:
    """A venue answering GET /fapi/v1/ping; yields its base URL."""
    app = web.Application()

    async def ping(_: web.Request) -> web.Response:
        return web.json_response({})

    app.router.add_get("/fapi/v1/ping", ping)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_health_pings_each_distinct_venue_once_naming_its_accounts(venue: str) -> None:
    silent = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = accounts_settings("a", "b", "c", base_urls={"a": venue, "b": silent, "c": venue})
    assert venues(settings) == {venue: ("a", "c"), silent: ("b",)}
    client = fakeredis.FakeAsyncRedis()
    checks = health_checks(client, settings)
    exchange = (await checks.all())["exchange"]
    await checks.close()
    assert exchange["status"] == "unhealthy"
    assert exchange["message"] == f"{silent}/fapi/v1/ping: ClientConnectorError (accounts b)"
    assert exchange["venues"] == {
        venue: {"status": "healthy", "accounts": ["a", "c"]},
        silent: {
            "status": "unhealthy",
            "accounts": ["b"],
            "message": f"{silent}/fapi/v1/ping: ClientConnectorError",
        },
    }

    one = accounts_settings("a", "c", base_urls={"a": venue, "c": venue})
    checks = health_checks(client, one)
    exchange = (await checks.all())["exchange"]
    await checks.close()
    assert exchange["status"] == "healthy" and exchange["message"] == venue  # as with one account
    assert exchange["venues"] == {venue: {"status": "healthy", "accounts": ["a", "c"]}}


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_create_order_counts_under_the_orders_account_and_an_unknown_one_under_other() -> None:
    metrics.set_accounts(["a", "b"])
    redis = fakeredis.FakeAsyncRedis()
    names = [("created", "a"), ("created", "b"), ("refused", "a"), ("refused", "b"), ("refused", "other")]

    def now() -> dict[tuple[str, str], float]:
        return {
            (what, account): counted("order_execution_orders_created_total", account=account)
            if what == "created"
            else counted("order_execution_orders_rejected_total", stage="gateway", account=account)
            for what, account in names
        }

    before = now()
    latency_b = counted("order_execution_order_latency_seconds_count", account="b")
    async with (
        serving_gateway(redis, redis, accounts=("a", "b")) as target,
        grpc.aio.insecure_channel(target) as channel,
    ):
        stub = order_pb2_grpc.OrderServiceStub(channel)
        await stub.CreateOrder(limit_order(account="b", client_order_id="c1"))
        await stub.CreateOrder(limit_order(account="b", client_order_id="c1"))  # the same order again
        await stub.CreateOrder(limit_order(client_order_id="c2"))  # no account named: the first, a
        for request in (
            limit_order(account="b", quantity="-1"),  # refused on b
            limit_order(quantity="-1"),  # refused on the default account, a
            limit_order(account="zzz"),  # an account not configured
        ):
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.CreateOrder(request)
    after = now()
    assert {key: after[key] - before[key] for key in names} == {
        ("created", "a"): 1,
        ("created", "b"): 1,  # the repeat is no new order
        ("refused", "a"): 1,
        ("refused", "b"): 1,
        ("refused", "other"): 1,
    }
    assert counted("order_execution_order_latency_seconds_count", account="b") == latency_b + 2
    assert REGISTRY.get_sample_value("order_execution_orders_created_total", {"account": "zzz"}) is None
    await redis.aclose()
