"""Cluster-wide gauges, read from Redis by one task on a timer, served by the gateway's /metrics.

Queue depths, unsettled orders by state, the shared rate budgets and bans, the shared
breakers, the listener's user stream and the live workers belong to no one process, so
the gateway reports them as Redis holds them: the same figures whichever gateway
replica is scraped. Per exchange account: each (account, symbol) queue's depth, the
unsettled orders by state and account ("other" for an account no longer configured), and
each account's budget (used, remaining and limit per window, its block). The breakers are
per venue and their gauge is per endpoint group: with several venues it shows each group's
worst state among them (open if any venue's is).

`GaugeRefresher` reads them every `monitoring.cluster_gauges_refresh_ms` and never per
scrape, so a scrape costs Redis nothing however often it comes; the figures are at most
one period old. Nothing here runs on the order path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dramatiq.common import dq_name, xq_name

from order_execution.exchange.breakers import Group, breaker_key
from order_execution.exchange.rate_budget import RateBudget
from order_execution.gateway import metrics
from order_execution.gateway.account_budgets import read_budgets
from order_execution.orders import metrics as shared
from order_execution.orders.listener_status import ListenerStatus
from order_execution.orders.model import DEFAULT_ACCOUNT, OrderState, now_ms
from order_execution.orders.store import OrderStore
from order_execution.runtime.redis_connection import reply_text
from order_execution.tasks.queues import DRAMATIQ_NAMESPACE, queue_for, queue_key
from order_execution.tasks.redis_queues import HEARTBEAT_TIMEOUT_MS

log = logging.getLogger(__name__)

STATE_SAMPLE = 5000  # unsettled orders read per refresh for the per-state gauge (oldest first)
FAILURE_LOG_INTERVAL_S = 60.0  # a Redis outage logs its first failure, then at most this often
_HEARTBEATS = f"{DRAMATIQ_NAMESPACE}:__heartbeats__"
_WORKER_PREFIX = "worker-"  # the worker process's consumer id (workers/process.py)


async def live_workers(store: OrderStore) -> int:
    """Worker processes whose consumer refreshed its Dramatiq heartbeat within its timeout."""
    pipe = store.pipeline()
    pipe.zrangebyscore(_HEARTBEATS, now_ms() - HEARTBEAT_TIMEOUT_MS, "+inf")
    (members,) = await pipe.execute()
    return sum(1 for m in members if reply_text(m).startswith(_WORKER_PREFIX))


@dataclass
class ClusterGauges:
    """The cluster gauges of `accounts` (the configured account names) x `symbols`: each
    account's budget in `budgets` (by account name; none with `rate_limit.enabled` false), and
    the breakers under each of `breaker_namespaces` (one per venue)."""

    store: OrderStore
    listener: ListenerStatus
    symbols: list[str]
    accounts: Sequence[str] = (DEFAULT_ACCOUNT,)
    budgets: Mapping[str, RateBudget] = field(default_factory=dict)
    breaker_namespaces: Sequence[str] = ()

    async def refresh(self) -> None:
        """Set every cluster gauge; raises redis errors (the caller keeps the last values)."""
        await self._queues_and_breakers()
        await self._order_states()
        await self._listener()
        metrics.WORKERS_CONSUMING.set(await live_workers(self.store))
        await self._budgets()

    async def _queues_and_breakers(self) -> None:
        pipe = self.store.pipeline()
        queues = [(account, symbol) for account in self.accounts for symbol in self.symbols]
        for account, symbol in queues:
            queue = queue_for(symbol, account)
            pipe.llen(queue_key(queue))
            pipe.llen(queue_key(dq_name(queue)))
            pipe.zcard(queue_key(xq_name(queue)))
        groups = list(Group)
        for namespace in self.breaker_namespaces:
            for group in groups:
                pipe.get(breaker_key(namespace, group))
        results: list[Any] = await pipe.execute()
        for index, (account, symbol) in enumerate(queues):
            ready, delayed, dead = results[3 * index : 3 * index + 3]
            metrics.QUEUE_DEPTH.labels(symbol, account).set(ready)
            metrics.QUEUE_DELAYED.labels(symbol, account).set(delayed)
            metrics.QUEUE_DEAD_LETTERS.labels(symbol, account).set(dead)
        states = results[3 * len(queues) :]
        for offset, group in enumerate(groups):
            per_venue = [
                reply_text(state) if state is not None else "closed"
                for state in states[offset :: len(groups)]
            ]
            if per_venue:
                shared.breaker_state(
                    str(group), max(per_venue, key=lambda s: shared.BREAKER_STATES.get(s, 0))
                )

    async def _order_states(self) -> None:
        ids = await self.store.unsettled(limit=STATE_SAMPLE)
        configured = frozenset(self.accounts)
        counts = Counter(
            (order.state, order.account if order.account in configured else shared.OTHER)
            for order in await self.store.get_many(ids)
        )
        for state in OrderState:
            for account in (*self.accounts, shared.OTHER):
                metrics.ORDER_STATE.labels(state.value, account).set(counts.get((state, account), 0))
        metrics.ORDERS_UNSETTLED.set(len(ids))

    async def _listener(self) -> None:
        """Per account: whether a listener leads it, and whether its user-data stream is up."""
        for account, status in (await self.listener.read_accounts(self.accounts)).items():
            metrics.LISTENER_LEADING.labels(account).set(1 if status else 0)
            metrics.USER_STREAM_CONNECTED.labels(account).set(
                1 if status.get("user_stream") == "connected" else 0
            )

    async def _budgets(self) -> None:
        """Per account: used, left and our limit per window ("left" is of our whole share: safety
        margin applied, cancels' reserve included), tokens in its bucket, and its block."""
        for budget in await read_budgets(self.budgets):
            account, state = budget.account, budget.state
            blocked_s = max(0, state.blocked_until_ms - now_ms()) / 1000
            metrics.EXCHANGE_BAN_SECONDS.labels(account).set(blocked_s)
            metrics.EXCHANGE_BANNED.labels(account).set(1 if blocked_s and budget.banned else 0)
            for window in budget.windows:
                metrics.RATE_BUDGET_USED.labels(window.name, account).set(window.used)
                metrics.RATE_BUDGET_REMAINING.labels(window.name, account).set(window.remaining)
                metrics.RATE_BUDGET_LIMIT.labels(window.name, account).set(window.limit)
            metrics.RATE_BUDGET_USED.labels("tokens", account).set(state.tokens)
            metrics.RATE_BUDGET_REMAINING.labels("tokens", account).set(state.tokens)


class GaugeRefresher:
    """One background task that refreshes `gauges` every `period_s`, the first time at once.

    Each refresh is bounded by `timeout_s`. A failed one (Redis away, a timeout, anything)
    keeps the last values and is logged, the first at once and then at most once per
    FAILURE_LOG_INTERVAL_S with the number of failures since; the task carries on until `stop`.
    """

    def __init__(self, gauges: ClusterGauges, *, period_s: float, timeout_s: float) -> None:
        self._gauges = gauges
        self._period_s = period_s
        self._timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._failures = 0
        self._logged_at = float("-inf")
        self.refreshes = 0  # refreshes that succeeded (for tests and the log)

    def start(self) -> None:
        """Start the task (once; a second call does nothing)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="cluster-gauges")

    async def stop(self) -> None:
        """Cancel the task and wait for it to end (a cancel of the caller still propagates)."""
        if self._task is not None:
            self._stopping = True  # ends the loop even if the cancel is lost in a finishing refresh
            self._task.cancel()
            await asyncio.wait({self._task})
            self._task = None

    async def refresh_once(self) -> bool:
        """One bounded refresh; True if every gauge was set, False (logged) if it failed."""
        try:
            async with asyncio.timeout(self._timeout_s):  # not wait_for: 3.11's can swallow a cancel
                await self._gauges.refresh()
        except Exception as exc:  # the task must outlive any failure; the gauges keep their values
            self._failed(exc)
            return False
        if self._failures:
            log.info("cluster gauges: refreshed again after %d failed attempts", self._failures)
            self._failures, self._logged_at = 0, float("-inf")
        self.refreshes += 1
        return True

    async def _run(self) -> None:
        while not self._stopping:
            await self.refresh_once()
            await asyncio.sleep(self._period_s)

    def _failed(self, exc: Exception) -> None:
        self._failures += 1
        now = time.monotonic()
        if now - self._logged_at >= FAILURE_LOG_INTERVAL_S:
            self._logged_at = now
            log.warning(
                "cluster gauges: not refreshed (%r; %d failed attempts in a row); /metrics serves the "
                "last values",
                exc,
                self._failures,
            )
