"""Listener process wiring: `order-execution listener`.

Every replica competes for the leader lease (`listener.lease`). The holder runs, until
it loses the lease or stops:
* the user-data stream, each order event applied to the store (`listener.event_lanes`: in order
  within one order, different orders at once);
* the reconciler: a sweep at start, after every stream (re)connection, and every
  `reconcile.interval_s`; plus index trimming of expired orders;
* the outbox relay to NATS JetStream;
* mark prices and positions for the gateways' pre-trade risk (`listener.risk_feeds`);
* the exchange clock sync the reconciler's signed queries need;
* the dead-man switch (`listener.dead_man`, setting `dead_man`): the exchange's countdownCancelAll
  kept armed for every symbol with open orders;
* the kill switch's cancel of every open order, when the gateway that took it did not finish
  it within `risk.cancel_open_grace_ms` (`service_layer.kill_switch`), checked every second.
Standbys retry the lease every third of its TTL and take over when it lapses. The
replica's id is `<hostname>:<pid>` (the lease's value), so an operator can tell who leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from order_execution.exchange.account import exchange_clients
from order_execution.exchange.user_stream import OrderEvent, UserStream
from order_execution.listener.dead_man import DeadManSwitch
from order_execution.listener.event_lanes import EventLanes
from order_execution.listener.events import EventBus
from order_execution.listener.lease import LeaderLease
from order_execution.listener.order_events import OrderEventRecorder
from order_execution.listener.reconciler import ReconcilePolicy, Reconciler
from order_execution.listener.relay import OutboxRelay
from order_execution.listener.risk_feeds import RiskFeeds
from order_execution.orders import metrics
from order_execution.orders.errors import StoreUnavailable
from order_execution.orders.listener_status import ListenerStatus
from order_execution.orders.model import now_ms
from order_execution.orders.risk_state import RiskState
from order_execution.orders.store import OrderStore
from order_execution.runtime.metrics_http import MetricsEndpoint
from order_execution.runtime.redis_connection import open_redis
from order_execution.runtime.settings import Settings, refuse_open_without_auth
from order_execution.runtime.shutdown import stop_on_signals
from order_execution.service_layer.kill_switch import finish_overdue_cancel_open
from order_execution.tasks.messages import cancel_order_push

log = logging.getLogger(__name__)

_MAINTENANCE_EVERY_S = 60.0
_RELAY_BLOCK_MS = 500
_STEP_FLOOR_S = 0.1  # a shutdown step is tried even when the grace period is used up
_CANCEL_OPEN_CHECK_S = 1.0  # how often the leader looks for a kill switch's unfinished cancel-open
_ACCOUNT_LANE = "account updates"  # a space: no client order id can name this lane


def replica_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Listener:
    """One listener replica (see the module docstring)."""

    def __init__(self, settings: Settings, *, holder_id: str | None = None) -> None:
        self.settings = settings
        self.holder_id = holder_id or replica_id()
        s = settings
        self._redis = open_redis(s.redis, blocking_reads_ms=_RELAY_BLOCK_MS)
        self.store = OrderStore.from_settings(self._redis, s)
        self.exchange = exchange_clients(self._redis, s)[s.trading_accounts[0].name]
        self.lease = LeaderLease(
            self._redis, namespace=s.redis.namespace, holder_id=self.holder_id, ttl_ms=s.listener.lease_ttl_ms
        )
        self.risk_state = RiskState(self._redis, namespace=s.redis.namespace)
        self.risk_feeds = RiskFeeds(self.risk_state, self.exchange, symbols=s.symbols)
        self.stream = UserStream(
            self.exchange,
            s.exchange.user_stream_url,
            keepalive_interval_s=s.listener.keepalive_interval_s,
            reconnect_after_s=s.listener.reconnect_after_s,
            backoff_max_s=s.listener.reconnect_backoff_max_s,
            heartbeat_s=s.listener.stream_heartbeat_s,
            on_account=self._on_account_update,
        )
        self.recorder = OrderEventRecorder(self.store, self.exchange)
        self.lanes = EventLanes(max_in_flight=s.listener.max_events_in_flight)
        self._positions_flush_queued = False
        self.reconciler = Reconciler(self.store, self.exchange, ReconcilePolicy.from_settings(s))
        self.relay = OutboxRelay(
            self.store.outbox,
            lambda: EventBus.connect(
                s.nats.server_list,
                stream=s.nats.stream,
                replicas=s.nats.replicas,
                ping_interval_s=s.nats.ping_interval_s,
                user=s.nats.user,
                password=s.nats.password.get_secret_value(),
            ),
            consumer=self.holder_id,
            block_ms=_RELAY_BLOCK_MS,
            replicas=self.store.replica_probe("nats-relay"),  # None unless redis.min_replica_acks
        )
        self.status = ListenerStatus(self._redis, namespace=s.redis.namespace)
        self.dead_man = DeadManSwitch(self.store, self.exchange, countdown_ms=s.dead_man.countdown_ms)
        self._sweep_now = asyncio.Event()
        self._leading: list[asyncio.Task[None]] = []

    async def run(self, stop: asyncio.Event) -> None:
        """Hold or wait for the lease until `stop` is set; then hand the lease over."""
        log.info("listener %s started; waiting for the lease", self.holder_id)
        renew_s = self.settings.listener.lease_ttl_ms / 3000
        try:
            while not stop.is_set():
                await self._hold_or_follow()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=renew_s)
        finally:
            # Every step bounded by what is left of the grace period: Redis may be unreachable.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.settings.server.shutdown_grace_ms / 1000
            for step in (self._step_down, self.lease.release, self.exchange.close, self._redis.aclose):
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(max(deadline - loop.time(), _STEP_FLOOR_S)):
                        await step()

    async def _hold_or_follow(self) -> None:
        try:
            holding = await self.lease.hold()
        except StoreUnavailable as exc:
            log.warning("listener lease: Redis unreachable (%r); keeping the current role", exc)
            return
        if holding and not self._leading:
            log.info("listener %s is now the leader", self.holder_id)
            self._lead()
        elif not holding and self._leading:
            log.warning(
                "listener %s lost the lease to %s; standing by", self.holder_id, await self.lease.holder()
            )
            await self._step_down()
        if holding:
            with contextlib.suppress(StoreUnavailable):
                await self.status.publish(self._status(), ttl_ms=self.settings.listener.lease_ttl_ms)

    def _status(self) -> dict[str, object]:
        return {
            "leader": self.holder_id,
            "user_stream": "connected" if self.stream.connected else "reconnecting",
            "stream_connections": self.stream.connections,
            "nats": "connected" if self.relay.nats_connected else "reconnecting",
            "relayed": self.relay.published,
            "unknown_orders_at_exchange": self.reconciler.unknown_orders_seen,
            "foreign_events": self.recorder.foreign,
            "awaiting_link_events": self.recorder.awaiting_link,
            "dead_man_armed": sorted(self.dead_man.armed),
        }

    async def publish_metrics(self) -> None:
        """Set this replica's gauges (a scrape calls this): leading, user stream, breakers."""
        metrics.LISTENER_LEADER.set(1 if self._leading else 0)
        metrics.LISTENER_USER_STREAM.set(1 if self._leading and self.stream.connected else 0)
        if self.exchange.breakers is not None:
            self.exchange.breakers.publish_states()

    def _lead(self) -> None:
        self._sweep_now.set()  # sweep at once: whatever happened while nobody led
        self._leading = [
            asyncio.create_task(self.stream.run(self._on_order_event, self._on_stream_connect)),
            asyncio.create_task(self._reconcile_forever()),
            asyncio.create_task(self.relay.run()),
            asyncio.create_task(_every(self.settings.performance.symbol_info_refresh, self._sync_clock)),
            asyncio.create_task(self.risk_feeds.run_marks(self.settings.risk.mark_price_poll_ms / 1000)),
            asyncio.create_task(self.risk_feeds.run_positions(self.settings.risk.position_refresh_s)),
            asyncio.create_task(_every(_CANCEL_OPEN_CHECK_S, self.finish_cancel_open)),
        ]
        if self.settings.dead_man.enabled:
            self._leading.append(asyncio.create_task(self.dead_man.run(self.settings.dead_man.interval_s)))

    async def _step_down(self) -> None:
        tasks, self._leading = self._leading, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.lanes.close()  # what is not applied yet, the next leader's sweep settles
        self._positions_flush_queued = False  # a flush it canceled; positionRisk is re-read on leading

    async def _on_order_event(self, event: OrderEvent) -> None:
        """An order's news goes on the order's lane. A conditional order's is applied at once, before
        anything that came after it: the order it triggers is recognised by the trigger's time."""
        if event.conditional:
            await self.recorder.record(event)
        else:
            await self.lanes.submit(event.client_order_id, lambda: self.recorder.record(event))

    async def _on_account_update(self, payload: dict[str, Any]) -> None:
        """Positions are noted at once and written in a lane of their own, every change noted
        before a write starts in that write: one write queued at a time, however many fills."""
        if self.risk_feeds.note_account_update(payload) and not self._positions_flush_queued:
            self._positions_flush_queued = True
            await self.lanes.submit(_ACCOUNT_LANE, self._flush_positions)

    async def _flush_positions(self) -> None:
        self._positions_flush_queued = False  # what is noted from now on needs the next write
        await self.risk_feeds.flush_positions()

    async def _on_stream_connect(self) -> None:
        self._sweep_now.set()

    async def _reconcile_forever(self) -> None:
        interval = self.settings.reconcile.interval_s
        last_maintenance = 0.0
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sweep_now.wait(), timeout=interval)
            self._sweep_now.clear()
            try:
                result = await self.reconciler.sweep()
                if result.changed or result.budget_exhausted:
                    log.info(
                        "reconciled: %d due, %d queries, %d changed%s",
                        result.looked_at,
                        result.queries,
                        result.changed,
                        "; query budget used up, continuing next sweep" if result.budget_exhausted else "",
                    )
                if loop.time() - last_maintenance > _MAINTENANCE_EVERY_S:
                    last_maintenance = loop.time()
                    ttl_ms = self.settings.performance.order_cache_ttl * 1000
                    await self.store.trim_indexes(older_than_ms=now_ms() - ttl_ms)
            except Exception as exc:
                log.warning("reconcile sweep failed (%r); next one in %.1f s", exc, interval)

    async def finish_cancel_open(self) -> None:
        """Complete a kill switch's cancel of the open orders that its gateway left pending: the
        switch for every account's and each account's own."""
        await finish_overdue_cancel_open(
            self.risk_state,
            self.store,
            cancel_order_push,
            grace_ms=self.settings.risk.cancel_open_grace_ms,
            actor=f"listener {self.holder_id}",
            accounts=self.settings.account_names,
        )

    async def _sync_clock(self) -> None:
        offset = await self.exchange.sync_clock()
        log.info("exchange clock offset %d ms", offset)


async def _every(period_s: float, job: Callable[[], Awaitable[None]]) -> None:
    """Run `job` now and every `period_s`; a failure is logged and retried after 1 s."""
    while True:
        try:
            await job()
            await asyncio.sleep(period_s)
        except Exception as exc:
            log.warning("%s failed (%r); retrying in 1 s", getattr(job, "__name__", job), exc)
            await asyncio.sleep(1.0)


async def serve(settings: Settings) -> None:
    """Run one listener replica until SIGINT/SIGTERM; its /metrics on `server.host` at
    `monitoring.listener_metrics_port`. Raises SettingsError first if that host is not loopback
    while auth is off (see `refuse_open_without_auth`)."""
    refuse_open_without_auth(settings, "listener")
    stop = asyncio.Event()
    stop_on_signals(stop, grace_s=settings.server.shutdown_grace_ms / 1000, process="listener")
    metrics.set_symbols(settings.symbols)
    metrics.set_accounts(settings.account_names)
    listener = Listener(settings)
    monitoring = settings.monitoring
    endpoint = MetricsEndpoint(
        settings.server.host,
        monitoring.listener_metrics_port,
        port_search=monitoring.port_search,
        refresh=listener.publish_metrics,
    )
    await endpoint.start()
    try:
        await listener.run(stop)
    finally:
        await endpoint.stop()
