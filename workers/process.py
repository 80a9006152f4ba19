"""Worker process wiring: what `dramatiq workers.process:setup` runs in every process.

`setup` builds the broker, registers the actors and declares one queue per symbol.
`WorkerRuntime` wires this process's executor (Redis, the exchange client) on Dramatiq's
asyncio loop *before* the consumers start, so a message already queued never meets an
unwired worker; nothing in that step waits on the network. The exchange clock and the
trading rules are then fetched in the background, retried until they succeed, and
refreshed every `performance.symbol_info_refresh` seconds.
"""

from __future__ import annotations

import asyncio
import logging

import dramatiq
import redis.asyncio as aioredis
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.middleware import Middleware

from exchange.account import exchange_client
from exchange.client import BinanceClient
from orders.logs import configure_logging
from orders.model import Order
from orders.redis_connection import open_redis
from orders.rules_store import RulesStore
from orders.settings import Settings, load_settings
from orders.store import OrderStore
from tasks.broker import build_broker
from tasks.messages import reconcile_message
from tasks.queues import queue_for
from workers.actors import register_actors
from workers.exchange_info import refresh_rules
from workers.execution import OrderExecutor

log = logging.getLogger(__name__)


class WorkerRuntime(Middleware):
    """Owns one worker process's connections and its OrderExecutor."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._executor: OrderExecutor | None = None
        self._redis: aioredis.Redis | None = None
        self._exchange: BinanceClient | None = None
        self._refresh_task: asyncio.Task[None] | None = None

    def executor(self) -> OrderExecutor:
        if self._executor is None:
            raise RuntimeError("worker runtime not started")
        return self._executor

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        loop_thread = get_event_loop_thread()
        assert loop_thread is not None, "the AsyncIO middleware must come first"
        loop_thread.run_coroutine(self._start(broker))

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        loop_thread = get_event_loop_thread()
        if loop_thread is not None:
            loop_thread.run_coroutine(self._stop())

    async def _start(self, broker: dramatiq.Broker) -> None:
        s = self.settings
        self._redis = open_redis(s.redis)
        self._exchange = exchange_client(self._redis, s)

        async def schedule_reconcile(order: Order, attempt: int, delay_ms: int) -> None:
            message = reconcile_message(order, attempt)
            await asyncio.to_thread(broker.enqueue, message, delay=delay_ms)

        self._executor = OrderExecutor(
            store=OrderStore.from_settings(self._redis, s),
            exchange=self._exchange,
            max_order_age_ms=s.worker.max_order_age_ms,
            schedule_reconcile=schedule_reconcile,
            request_timeout_ms=s.exchange.request_timeout_ms,
        )
        self._refresh_task = asyncio.create_task(
            self._refresh_forever(RulesStore(self._redis, namespace=s.redis.namespace))
        )

    async def _refresh_forever(self, rules: RulesStore) -> None:
        """Clock offset and trading rules now (retrying until they load), then periodically."""
        assert self._exchange is not None
        retry_s = 1.0
        while True:
            try:
                offset = await self._exchange.sync_clock()
                stored = await refresh_rules(self._exchange, rules, self.settings.symbols)
                log.info("exchange clock offset %d ms; trading rules loaded for %s", offset, stored)
                retry_s = float(self.settings.performance.symbol_info_refresh)
            except Exception as exc:
                log.warning("loading exchangeInfo failed (%r); trying again in %.0f s", exc, retry_s)
            await asyncio.sleep(retry_s)

    async def _stop(self) -> None:
        if self._refresh_task is not None:
            self._refresh_task.cancel()
        if self._exchange is not None:
            await self._exchange.close()
        if self._redis is not None:
            await self._redis.aclose()


def setup() -> None:
    """Entry point for `dramatiq workers.process:setup` (see `order-execution worker`)."""
    settings = load_settings()
    configure_logging(settings.logging, process="worker")
    broker = build_broker(settings.redis.url)
    runtime = WorkerRuntime(settings)
    broker.add_middleware(runtime)
    register_actors(broker, runtime.executor)
    for symbol in settings.symbols:
        broker.declare_queue(queue_for(symbol))
    dramatiq.set_broker(broker)
