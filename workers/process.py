"""One worker process: the order executor behind an asyncio consumer of the symbol queues.

Everything is wired before the first fetch, and nothing in that step waits on the
network, so a message already queued never meets an unwired worker. The exchange clock
and the trading rules are then fetched in the background, retried until they succeed,
and refreshed every `performance.symbol_info_refresh` seconds. SIGTERM or SIGINT stops
fetching, lets in-flight orders finish within `server.shutdown_grace_ms` and hands the
rest back to their queues (runtime/shutdown.py ends the process if that overruns).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from uuid import uuid4

import uvloop

from order_execution.exchange.account import exchange_clients
from order_execution.exchange.client import BinanceClient
from order_execution.orders import metrics
from order_execution.orders.model import Order
from order_execution.orders.rules_store import RulesStore
from order_execution.orders.store import OrderStore
from order_execution.runtime.metrics_http import MetricsEndpoint
from order_execution.runtime.redis_connection import open_redis
from order_execution.runtime.settings import Settings, refuse_open_without_auth
from order_execution.runtime.shutdown import stop_on_signals
from order_execution.tasks.messages import reconcile_message
from order_execution.tasks.queues import account_of, queues_for
from order_execution.workers.consumer import Consumer
from order_execution.workers.exchange_info import refresh_rules
from order_execution.workers.execution import OrderExecutor
from order_execution.workers.retry_policy import order_handlers

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 1.0
_CLOSE_TIMEOUT_S = 0.5


def serve(settings: Settings, queues: list[str] | None = None) -> None:
    """Run one worker process until SIGTERM/SIGINT; `queues` defaults to every (account, symbol)
    queue.

    Its /metrics binds `server.host`; raises SettingsError first if that is not loopback while
    auth is off (see `refuse_open_without_auth`).
    """
    refuse_open_without_auth(settings, "worker")
    uvloop.run(_serve(settings, queues or queues_for(settings.account_names, settings.symbols)))


async def _serve(settings: Settings, queues: list[str]) -> None:
    stop = asyncio.Event()
    grace_s = settings.server.shutdown_grace_ms / 1000
    stop_on_signals(stop, grace_s=grace_s, process="worker")
    redis = open_redis(settings.redis, blocking_reads_ms=int(SWEEP_INTERVAL_S * 1000))
    exchanges = exchange_clients(redis, settings)
    consumer: Consumer | None = None

    async def schedule_reconcile(order: Order, attempt: int, delay_ms: int) -> None:
        assert consumer is not None
        await consumer.enqueue(reconcile_message(order, attempt), delay_ms)

    store = OrderStore.from_settings(redis, settings)
    executors = {}
    for name, exchange in exchanges.items():
        exchange.forget_position_mode()  # hedge or one-way: the first order asks, if the refresh has not yet
        executors[name] = OrderExecutor(
            store=store,
            exchange=exchange,
            max_order_age_ms=settings.worker.max_order_age_ms,
            schedule_reconcile=schedule_reconcile,
            request_timeout_ms=settings.exchange.request_timeout_ms,
        )
    consumer = Consumer(
        redis,
        queues,
        order_handlers(executors),
        max_in_flight=settings.worker.max_in_flight,
        sweep_interval_s=SWEEP_INTERVAL_S,
        worker_id=f"worker-{uuid4()}",
        group_of=account_of,
    )
    rules = RulesStore(redis, namespace=settings.redis.namespace)
    refresh = asyncio.create_task(_refresh_forever(exchanges, rules, settings))
    endpoint = _metrics_endpoint(settings, list(exchanges.values()))
    await endpoint.start()
    log.info("worker consuming %d queues, up to %d orders in flight", len(queues), consumer.max_in_flight)
    try:
        await consumer.run(stop, grace_s=grace_s)
    finally:
        refresh.cancel()
        await endpoint.stop()
        for close in [*(client.close for client in exchanges.values()), redis.aclose]:  # bounded
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                    await close()
    log.info("worker stopped")


def _metrics_endpoint(settings: Settings, exchanges: list[BinanceClient]) -> MetricsEndpoint:
    """This process's /metrics (`monitoring.worker_metrics_port`, or the next free port)."""
    metrics.set_symbols(settings.symbols)
    metrics.set_accounts(settings.account_names)

    async def publish_breakers() -> None:
        for breakers in {id(c.breakers): c.breakers for c in exchanges if c.breakers is not None}.values():
            breakers.publish_states()

    monitoring = settings.monitoring
    return MetricsEndpoint(
        settings.server.host,
        monitoring.worker_metrics_port,
        port_search=monitoring.port_search,
        refresh=publish_breakers,
    )


async def _refresh_forever(
    exchanges: dict[str, BinanceClient], rules: RulesStore, settings: Settings
) -> None:
    """Each account's clock offset, trading rules and position mode now (retrying until they load),
    then periodically. Accounts may trade on different venues (`accounts[].base_url`), so each
    client measures its own clock and stores its own venue's limits in its budget."""
    retry_s = 1.0
    while True:
        try:
            for account, exchange in exchanges.items():
                offset = await exchange.sync_clock()
                stored = await refresh_rules(exchange, rules, settings.symbols)
                mode = await exchange.position_mode()
                log.info(
                    "account %s: exchange clock offset %d ms; trading rules loaded for %s; %s position mode",
                    account,
                    offset,
                    stored,
                    mode,
                )
            retry_s = float(settings.performance.symbol_info_refresh)
        except Exception as exc:
            log.warning("loading exchangeInfo failed (%r); trying again in %.0f s", exc, retry_s)
        await asyncio.sleep(retry_s)
