"""Listener process wiring: `order-execution listener`.

One listener process contends for the lease of every configured exchange account
(`listener.lease`, `listener.leadership`) and, for each account whose lease it holds, runs that
account's work with that account's client (`listener.account_lead`): its user-data stream, its
reconciler, positions, clock sync, dead-man switch and kill-switch completion. Standbys retry
every lease every third of its TTL and take over each account whose leader died, each on its
own: the replica leading accounts A and B dies, and the others take A and B over within about
one TTL; two replicas may split the accounts between them.

What serves the whole deployment runs once, under the lease of the first configured account
(the account `default` of a single-account deployment, so nothing there changes):
* the outbox relay to NATS JetStream (`listener.relay`). The outbox is one stream of every
  account's changes, read through one consumer group, so one relay serves all. It shares the
  first account's lease rather than having a lease of its own: a single-account deployment
  keeps exactly today's shape (one lease key, the relay beside the stream, the relay's fields
  in the same status), and old and new replicas of a rolling upgrade contend for that one key,
  so the relay never runs twice meanwhile (two relays would be harmless, only wasteful: their
  consumer group and JetStream's message ids de-duplicate). The relay is not tied to that
  account's health: only to a live replica holding its lease;
* the venue's mark prices (`risk.mark_price_poll_ms`): one poll, through the first account's
  client, written to the account `default`'s risk keys, where every gateway reads them;
* the trimming of expired orders' index entries (every index, every account).

The replica's id is `<hostname>:<pid>` (each lease's value), so an operator can tell who leads
which account; the status of each account is published for /health (`orders.listener_status`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

import redis.asyncio as aioredis

from order_execution.exchange.account import exchange_clients
from order_execution.exchange.breakers import Breakers
from order_execution.listener.account_lead import AccountLead, Duty, every
from order_execution.listener.events import EventBus
from order_execution.listener.leadership import Leadership
from order_execution.listener.lease import LeaderLease
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
_CANCEL_OPEN_CHECK_S = 1.0  # how often the leader looks for an unfinished cancel of every account's orders
_RELAY_BLOCK_MS = 500
_STEP_FLOOR_S = 0.1  # a shutdown step is tried even when the grace period is used up


def replica_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Listener:
    """One listener replica (see the module docstring).

    `redis` is the connection to use (default: one opened from `settings.redis`).
    """

    def __init__(
        self, settings: Settings, *, holder_id: str | None = None, redis: aioredis.Redis | None = None
    ) -> None:
        self.settings = settings
        self.holder_id = holder_id or replica_id()
        s = settings
        namespace = s.redis.namespace
        self._redis = redis if redis is not None else open_redis(s.redis, blocking_reads_ms=_RELAY_BLOCK_MS)
        self.store = OrderStore.from_settings(self._redis, s)
        self.clients = exchange_clients(self._redis, s)
        self.first_account = s.trading_accounts[0].name
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
        # The venue's marks, at the account `default`'s keys: where every gateway reads them; the
        # same state holds the switch for every account.
        self.risk_state = RiskState(self._redis, namespace=namespace)
        self.marks = RiskFeeds(self.risk_state, self.clients[self.first_account], symbols=s.symbols)
        self.leads = {
            account.name: AccountLead(
                account.name,
                settings=s,
                store=self.store,
                exchange=self.clients[account.name],
                risk_state=RiskState(self._redis, namespace=namespace, account=account.name),
                stream_url=account.exchange.user_stream_url,
                holder_id=self.holder_id,
                duties=self._deployment_duties() if account.name == self.first_account else (),
            )
            for account in s.trading_accounts
        }
        self.leadership = Leadership(
            {
                name: LeaderLease(
                    self._redis,
                    namespace=namespace,
                    holder_id=self.holder_id,
                    ttl_ms=s.listener.lease_ttl_ms,
                    account=name,
                )
                for name in self.leads
            },
            lead=self._lead,
            step_down=self._step_down,
        )
        self.status = ListenerStatus(self._redis, namespace=namespace)

    def _deployment_duties(self) -> tuple[Duty, ...]:
        """What runs once for the whole deployment (see the module docstring)."""
        marks_period_s = self.settings.risk.mark_price_poll_ms / 1000
        return (
            self.relay.run,
            lambda: self.marks.run_marks(marks_period_s),
            lambda: every(_MAINTENANCE_EVERY_S, self._trim_indexes),
            lambda: every(_CANCEL_OPEN_CHECK_S, self._finish_every_account_cancel_open),
        )

    async def _finish_every_account_cancel_open(self) -> None:
        """Complete a cancel of every account's open orders that the kill switch for every account
        left pending (each account's own switch is its lead's: `AccountLead.finish_cancel_open`)."""
        await finish_overdue_cancel_open(
            self.risk_state,
            self.store,
            cancel_order_push,
            grace_ms=self.settings.risk.cancel_open_grace_ms,
            actor=f"listener {self.holder_id}",
            accounts=(),
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Hold or wait for every account's lease until `stop` is set; then hand them over."""
        log.info(
            "listener %s started; waiting for the leases of account(s) %s",
            self.holder_id,
            ", ".join(self.leadership.accounts),
        )
        renew_s = self.settings.listener.lease_ttl_ms / 3000
        try:
            while not stop.is_set():
                await self.renew()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=renew_s)
        finally:
            # Every step bounded by what is left of the grace period: Redis may be unreachable.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.settings.server.shutdown_grace_ms / 1000
            steps = [
                self.leadership.step_down_all,
                self.leadership.release,
                *(client.close for client in self.clients.values()),
                self._redis.aclose,
            ]
            for step in steps:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(max(deadline - loop.time(), _STEP_FLOOR_S)):
                        await step()

    async def renew(self) -> None:
        """One round: every account's lease tried, the accounts held led, their status published."""
        leading = await self.leadership.renew()
        ttl_ms = self.settings.listener.lease_ttl_ms
        with contextlib.suppress(StoreUnavailable):
            await asyncio.gather(
                *(
                    self.status.publish(self._status(name), ttl_ms=ttl_ms, account=name)
                    for name in sorted(leading)
                )
            )

    def _status(self, account: str) -> dict[str, object]:
        fields = self.leads[account].status()
        if account == self.first_account:  # the deployment's relay runs under this account's lease
            fields.update(
                nats="connected" if self.relay.nats_connected else "reconnecting",
                relayed=self.relay.published,
            )
        return fields

    async def publish_metrics(self) -> None:
        """Set this replica's gauges (a scrape calls this): leading and user stream per account,
        breakers."""
        leading = self.leadership.leading
        for name, lead in self.leads.items():
            metrics.LISTENER_LEADER.labels(name).set(1 if name in leading else 0)
            metrics.LISTENER_USER_STREAM.labels(name).set(
                1 if name in leading and lead.stream.connected else 0
            )
        venues: dict[int, Breakers] = {
            id(c.breakers): c.breakers for c in self.clients.values() if c.breakers
        }
        for breakers in venues.values():
            breakers.publish_states()

    async def _lead(self, account: str) -> None:
        self.leads[account].start()

    async def _step_down(self, account: str) -> None:
        await self.leads[account].stop()

    async def _trim_indexes(self) -> None:
        ttl_ms = self.settings.performance.order_cache_ttl * 1000
        await self.store.trim_indexes(older_than_ms=now_ms() - ttl_ms)


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
    await listener.publish_metrics()  # every account's series, at 0 until it leads
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
