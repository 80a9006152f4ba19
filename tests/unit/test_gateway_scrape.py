"""The gateway's /metrics costs Redis nothing: the cluster gauges come from one timed task.

The HTTP app is served on a real socket; its store, rules, listener status and budget sit on
fakeredis, whose connection counts every command packed for Redis.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import fakeredis
import pytest
import redis.exceptions
from aiohttp import web
from fakeredis.aioredis import FakeAsyncRedisConnection
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from order_execution.exchange import metrics as exchange_metrics
from order_execution.exchange.account import rate_budget
from order_execution.gateway import cluster_gauges
from order_execution.gateway import metrics as gateway_metrics
from order_execution.gateway.cluster_gauges import GaugeRefresher
from order_execution.gateway.http import GAUGE_REFRESHER, HealthChecks, build_http_app
from order_execution.gateway.rules_cache import RulesCache
from order_execution.launcher.processes import free_port
from order_execution.orders import metrics as shared
from order_execution.orders.listener_status import ListenerStatus
from order_execution.orders.model import OrderState
from order_execution.orders.rules_store import RulesStore
from order_execution.orders.store import OrderStore
from order_execution.runtime.settings import MonitoringSettings, Settings


@dataclass
class Served:
    base: str
    refresher: GaugeRefresher
    commands: list[int]


@pytest.fixture
async def served(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Served]:
    commands = [0]
    pack_one = FakeAsyncRedisConnection.pack_command
    pack_many = FakeAsyncRedisConnection.pack_commands

    def count_one(self: Any, *args: Any) -> Any:
        commands[0] += 1
        return pack_one(self, *args)

    def count_many(self: Any, batch: Any) -> Any:
        batch = list(batch)
        commands[0] += len(batch)
        return pack_many(self, batch)

    # Every command reaches Redis packed by its connection: one at a time, or a pipeline's batch.
    monkeypatch.setattr(FakeAsyncRedisConnection, "pack_command", count_one)
    monkeypatch.setattr(FakeAsyncRedisConnection, "pack_commands", count_many)
    client = fakeredis.FakeAsyncRedis()
    # A period far past the test: after the first refresh, only a scrape could send a command.
    settings = Settings(
        monitoring=MonitoringSettings(cluster_gauges_refresh_ms=3_600_000, metrics_render_ms=0)
    )
    store = OrderStore.from_settings(client, settings)
    budget = rate_budget(client, settings, settings.trading_accounts[0])
    assert budget is not None  # rate_limit.enabled by default
    checks = HealthChecks(
        settings,
        store,
        RulesCache(RulesStore(client)),
        ListenerStatus(client, namespace=settings.redis.namespace),
        {"default": budget},
    )
    app = build_http_app(checks)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    refresher = app[GAUGE_REFRESHER]
    try:
        yield Served(f"http://127.0.0.1:{port}", refresher, commands)
    finally:
        await runner.cleanup()
        await client.aclose()


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10  # wide: only stops a hang
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_scrapes_send_no_command_to_redis(served: Served) -> None:
    await wait_until(lambda: served.refresher.refreshes >= 1, "the first refresh")
    before = served.commands[0]
    async with aiohttp.ClientSession() as http:
        for _ in range(50):
            async with http.get(f"{served.base}/metrics") as response:
                assert response.status == 200
                text = await response.text()
    assert served.commands[0] - before == 0
    assert "order_execution_workers_consuming 0.0" in text  # the cluster gauges are served
    assert 'order_execution_orders_by_state{account="default",state="UNKNOWN"} 0.0' in text
    # The count is real: a refresh itself does reach Redis.
    assert await served.refresher.refresh_once()
    assert served.commands[0] - before > 0


async def test_the_refresh_task_stops_with_the_app(served: Served) -> None:
    await wait_until(lambda: served.refresher.refreshes >= 1, "the first refresh")
    task = served.refresher._task
    assert task is not None and not task.done()
    await served.refresher.stop()
    assert task.done()


def unsettled() -> float | None:
    return REGISTRY.get_sample_value("order_execution_orders_unsettled")


class FlakyGauges:
    """Cluster gauges whose Redis fails `failures` times, then answers (setting a gauge to 7)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def refresh(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise redis.exceptions.ConnectionError("Redis away")
        gateway_metrics.ORDERS_UNSETTLED.set(7)


async def test_the_refresh_task_survives_redis_errors_keeps_the_last_values_and_logs_rarely(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway_metrics.ORDERS_UNSETTLED.set(3)
    gauges = FlakyGauges(failures=30)
    refresher = GaugeRefresher(gauges, period_s=0.001, timeout_s=1)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger=cluster_gauges.__name__):
        refresher.start()
        await wait_until(lambda: gauges.calls >= 10, "ten failed refreshes")
        assert unsettled() == 3  # the last value, kept
        await wait_until(lambda: refresher.refreshes >= 1, "Redis to answer again")
        await refresher.stop()
    assert unsettled() == 7
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # 30 failures within FAILURE_LOG_INTERVAL_S: logged once
    assert any("refreshed again after 30 failed attempts" in r.getMessage() for r in caplog.records)


Series = set[tuple[str, tuple[tuple[str, str], ...]]]


# Each labelled counter whose label values are known, with every one of those values; a counter
# with an `account` label has each of them for the account "default" (no `accounts:` configured).
def expected_zero_series() -> Series:
    def one(name: str, label: str, values: Any, **fixed: str) -> Series:
        return {(name, tuple(sorted({label: str(v), **fixed}.items()))) for v in values}

    default = {"account": "default"}
    wanted = one("order_execution_order_state_changes_total", "state", [s.value for s in OrderState])
    wanted |= one("order_execution_orders_rejected_total", "stage", ["gateway", "exchange"], **default)
    wanted |= one("order_execution_orders_rejected_total", "stage", ["gateway", "exchange"], account="other")
    wanted |= one("order_execution_orders_created_total", "account", ["default"])
    wanted |= one("order_execution_orders_filled_total", "symbol", ["other"], **default)
    wanted |= one("order_execution_rate_limit_hits_total", "limit", shared.ACCOUNT_RATE_LIMITS, **default)
    wanted |= one("order_execution_rate_limit_hits_total", "limit", shared.CLIENT_RATE_LIMITS, account="")
    wanted |= one("order_execution_risk_refusals_total", "limit", shared.RISK_LIMITS)
    wanted |= one("order_execution_reconciliation_mismatches_total", "kind", shared.MISMATCH_KINDS)
    wanted |= one("order_execution_cache_hits_total", "cache", ["orders"])
    wanted |= one("order_execution_cache_misses_total", "cache", ["orders"])
    endpoints = [*exchange_metrics.ENDPOINTS, shared.OTHER]
    wanted |= one("order_execution_exchange_requests_total", "endpoint", endpoints, **default)
    wanted |= {
        (
            "order_execution_exchange_errors_total",
            (("account", "default"), ("code", code), ("endpoint", endpoint)),
        )
        for endpoint in endpoints
        for code in exchange_metrics.ERROR_CODES
    }
    return wanted


def test_a_fresh_process_shows_every_known_counter_series_at_zero() -> None:
    # A new interpreter: this one's registry has counted other tests' events.
    program = (
        "import gateway.server, workers.process, listener.process\n"
        "from prometheus_client import generate_latest\n"
        "print(generate_latest().decode())\n"
    )
    text = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    served = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    wanted = expected_zero_series()
    missing = sorted(wanted - served.keys())
    assert not missing, missing[:10]
    assert all(served[key] == 0 for key in wanted)
    assert (
        "order_execution_exchange_errors_total",
        (("account", "default"), ("code", "-2019"), ("endpoint", "POST /fapi/v1/order")),
    ) in wanted
