"""Worker process wiring: what `dramatiq workers.process:setup` runs in every process.

`setup` builds the broker, registers the actors and declares one queue per symbol.
`WorkerRuntime` then opens this process's connections (Redis, NATS, the exchange) on
Dramatiq's asyncio loop when the worker boots, and closes them at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from uuid import uuid4

import dramatiq
import redis.asyncio as aioredis
from dramatiq import Message
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.middleware import Middleware

from orders.events import EventBus
from orders.logs import configure_logging
from orders.model import Order
from orders.rules_store import RulesStore
from orders.settings import Settings, load_settings
from orders.store import OrderStore
from tasks.broker import build_broker
from tasks.queues import RECONCILE_ORDER, queue_for
from workers.actors import register_actors
from workers.binance import BinanceClient
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
        self._bus: EventBus | None = None
        self._refresh_task: asyncio.Task[None] | None = None

    def executor(self) -> OrderExecutor:
        if self._executor is None:
            raise RuntimeError("worker runtime not started")
        return self._executor

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        loop_thread = get_event_loop_thread()
        assert loop_thread is not None, "the AsyncIO middleware must come first"
        loop_thread.run_coroutine(self._start(broker))

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        loop_thread = get_event_loop_thread()
        if loop_thread is not None:
            loop_thread.run_coroutine(self._stop())

    async def _start(self, broker: dramatiq.Broker) -> None:
        s = self.settings
        self._redis = aioredis.Redis.from_url(s.redis.url)
        self._exchange = BinanceClient(
            s.exchange.rest_url,
            api_key=s.exchange.api_key.get_secret_value(),
            secret_key=s.exchange.secret_key.get_secret_value(),
            recv_window_ms=s.exchange.recv_window_ms,
            timeout_ms=s.exchange.request_timeout_ms,
        )
        self._bus = await EventBus.connect(
            s.nats.address, stream=s.nats.stream, ping_interval_s=s.nats.ping_interval_s
        )
        offset = await self._exchange.sync_clock()
        log.info("exchange clock offset %d ms", offset)
        rules = RulesStore(self._redis, namespace=s.redis.namespace)
        stored = await refresh_rules(self._exchange, rules, s.symbols)
        log.info("trading rules loaded for %s", stored)
        self._refresh_task = asyncio.create_task(self._refresh_forever(rules))

        async def schedule_reconcile(order: Order, attempt: int, delay_ms: int) -> None:
            message: Message[object] = Message(
                queue_name=queue_for(order.symbol),
                actor_name=RECONCILE_ORDER,
                args=(),
                kwargs={"order_id": order.order_id, "attempt": attempt},
                options={},
                message_id=str(uuid4()),
            )
            await asyncio.to_thread(broker.enqueue, message, delay=delay_ms)

        self._executor = OrderExecutor(
            store=OrderStore(self._redis, namespace=s.redis.namespace, ttl_s=s.performance.order_cache_ttl),
            bus=self._bus,
            exchange=self._exchange,
            max_order_age_ms=s.worker.max_order_age_ms,
            schedule_reconcile=schedule_reconcile,
        )

    async def _refresh_forever(self, rules: RulesStore) -> None:
        assert self._exchange is not None
        while True:
            await asyncio.sleep(self.settings.performance.symbol_info_refresh)
            try:
                await refresh_rules(self._exchange, rules, self.settings.symbols)
                await self._exchange.sync_clock()
            except Exception:
                log.exception("refreshing exchangeInfo failed; keeping the previous rules")

    async def _stop(self) -> None:
        if self._refresh_task is not None:
            self._refresh_task.cancel()
        if self._bus is not None:
            await self._bus.close()
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
