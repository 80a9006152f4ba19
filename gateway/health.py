"""The gateway's health checks, as /health, /health/ready and /metrics use them.

Each check answers `{"name", "status": "healthy"|"unhealthy", "duration_ms", "message"?}`
within `monitoring.probe_timeout_ms`. Two gate readiness — Redis (every order goes
through it) and the trading rules (no order can be validated without them), plus, for the first 15 s after
start, the mark prices (so a fresh stack does not refuse its first MARKET orders). The others
only degrade: NATS (updates wait in the outbox), the exchange (queued orders wait), the
user-data stream of every account (fills wait for the reconciler; with several accounts the
check lists each account's listener: who leads it, its stream, its last event), the workers
(nothing is sent) and the rate limits (every replica holds off after a 429/418), and trading (the kill switch:
unhealthy while REDUCING or HALTED, saying who set it, when and why, and whether a cancel of every
open order is still pending). The NATS probe greets every server of `nats.servers` (else
`nats.address`) and is healthy while one answers. The exchange ping and the NATS
probe are cached `monitoring.probe_cache_ms`, so frequent probes cost the exchange nothing.
The rate limits and the exchange ping have an entry per account and per venue
(gateway/health_accounts.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from order_execution.exchange.account import venues
from order_execution.exchange.rate_budget import RateBudget
from order_execution.gateway.cluster_gauges import live_workers
from order_execution.gateway.health_accounts import BudgetCheck, VenuePings
from order_execution.gateway.probes import CachedProbe, Check, Detailed
from order_execution.gateway.rules_cache import RulesCache
from order_execution.orders.listener_status import ListenerStatus
from order_execution.orders.model import DEFAULT_ACCOUNT, now_ms
from order_execution.orders.risk_state import ModeStatus, RiskState, TradingMode
from order_execution.orders.store import OrderStore
from order_execution.runtime.addresses import nats_host_port, nats_servers
from order_execution.runtime.settings import Settings

READINESS = ("redis", "trading_rules", "mark_prices")
# Readiness waits this long after start for the listener's first mark prices (MARKET orders
# cannot be priced against risk.max_order_notional without them); after that it stops
# gating on them, so a listener outage never takes every gateway out of service.
MARK_PRICE_STARTUP_WAIT_S = 15.0


@dataclass
class HealthChecks:
    """The checks; `budgets`: each account's shared rate budget by account name (empty with
    `rate_limit.enabled` false)."""

    settings: Settings
    store: OrderStore
    rules: RulesCache
    listener: ListenerStatus
    budgets: Mapping[str, RateBudget] = field(default_factory=dict)
    risk: RiskState | None = None

    def __post_init__(self) -> None:
        cache_s = self.settings.monitoring.probe_cache_ms / 1000
        self._timeout_s = self.settings.monitoring.probe_timeout_ms / 1000
        self._exchange = VenuePings(venues(self.settings), cache_s=cache_s, timeout_s=self._timeout_s)
        self._rate_limits = BudgetCheck(self.budgets)
        self._nats = CachedProbe(self._probe_nats, cache_s)
        self._started = time.monotonic()
        self._marks_seen = False

    async def readiness(self) -> dict[str, dict[str, object]]:
        """The checks that gate readiness."""
        return await self._run(
            {"redis": self._redis, "trading_rules": self._rules, "mark_prices": self._mark_prices}
        )

    async def all(self) -> dict[str, dict[str, object]]:
        """Every check, run concurrently."""
        return await self._run(
            {
                "redis": self._redis,
                "trading_rules": self._rules,
                "mark_prices": self._mark_prices,
                "nats": self._nats,
                "exchange": self._exchange,
                "user_stream": self._user_stream,
                "workers": self.workers,
                "rate_limits": self._rate_limits,
                "trading": self._trading,
            }
        )

    async def close(self) -> None:
        await self._exchange.close()

    async def _run(self, checks: dict[str, Check]) -> dict[str, dict[str, object]]:
        results = await asyncio.gather(*(self._timed(name, check) for name, check in checks.items()))
        return {str(r["name"]): r for r in results}

    async def _timed(self, name: str, check: Check) -> dict[str, object]:
        started = time.perf_counter()
        entries: Mapping[str, object] = {}
        try:
            answer = await asyncio.wait_for(check(), self._timeout_s)
            detail, status = answer, "healthy"
            if isinstance(answer, Detailed):
                detail, entries = answer.message, answer.entries
                status = "healthy" if answer.healthy else "unhealthy"
        except TimeoutError:
            detail, status = f"no answer within {self._timeout_s * 1000:.0f} ms", "unhealthy"
        except Exception as exc:
            detail, status = str(exc) or type(exc).__name__, "unhealthy"
        result: dict[str, object] = {
            "name": name,
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        }
        if detail:
            result["message"] = detail
        result.update(entries)
        return result

    async def _redis(self) -> str:
        await self.store.ping()
        return ""

    async def _rules(self) -> str:
        if not self.rules.current:
            await self.rules.reload_on_miss()
        if not self.rules.current:
            raise LookupError("no trading rules yet; a worker loads them from the exchange at start")
        return f"{len(self.rules.current)} symbols"

    async def workers(self) -> str:
        """Healthy while at least one worker process consumes the queues (a fresh heartbeat)."""
        count = await live_workers(self.store)
        if not count:
            raise LookupError(
                "no worker is consuming the queues: orders wait; start `order-execution worker`"
            )
        return f"{count} worker process(es) consuming"

    async def _user_stream(self) -> str:
        """Each account's listener: healthy while every account has a leader whose user-data stream
        is connected. The one account `default` answers as a single-account deployment always did;
        several accounts get one entry each, `<account>: <state>`, in the order configured."""
        accounts = self.settings.account_names
        statuses = await self.listener.read_accounts(accounts)
        if accounts == [DEFAULT_ACCOUNT]:
            status = statuses[DEFAULT_ACCOUNT]
            if not status:
                raise LookupError(
                    "no listener leads: fills, reconciliation and NATS updates wait; "
                    "start `order-execution listener`"
                )
            if status.get("user_stream") != "connected":
                raise ConnectionError(
                    f"listener {status.get('leader')}: user-data stream {status.get('user_stream')}"
                )
            return f"connected (listener {status.get('leader')})"
        entries = [f"{name}: {_account_stream(statuses[name])}" for name in accounts]
        if any(statuses[name].get("user_stream") != "connected" for name in accounts):
            raise ConnectionError("; ".join(entries))
        return "; ".join(entries)

    async def _mark_prices(self) -> str:
        """Unhealthy only until the first mark prices arrive, at most MARK_PRICE_STARTUP_WAIT_S."""
        if self.risk is None or self._marks_seen:
            return ""
        if await self.risk.marks():
            self._marks_seen = True
            return ""
        if time.monotonic() - self._started > MARK_PRICE_STARTUP_WAIT_S:
            self._marks_seen = True
            return "none yet: MARKET orders are refused until the listener polls premiumIndex"
        raise LookupError("waiting for the listener's first mark prices (premiumIndex)")

    async def _trading(self) -> str:
        """The kill switches: healthy while every one is ACTIVE; each switch that is REDUCING or
        HALTED (the one for every account, an account's own) reports who set it and why."""
        if self.risk is None:
            return "ACTIVE (no kill switch wired)"
        switches = await self.risk.switches(self.settings.account_names)
        not_active = [
            s
            for s in (switches.every_account, *switches.accounts.values())
            if s.mode is not TradingMode.ACTIVE
        ]
        if not not_active:
            return "ACTIVE"
        raise PermissionError("; ".join(_switch_set(status) for status in not_active))

    async def _probe_nats(self) -> str:
        return await probe_nats_servers(self.settings.nats.server_list, self._timeout_s)


def _account_stream(status: dict[str, str]) -> str:
    """One account's listener state from its status hash: who leads, its stream, its last event."""
    if not status:
        return "no listener leads (fills and reconciliation wait)"
    last = int(status.get("last_event_at") or 0)
    news = f"last event {(now_ms() - last) / 1000:.1f} s ago" if last else "no event yet"
    return f"{status.get('user_stream')} (listener {status.get('leader')}, {news})"


async def probe_nats_servers(address: str, timeout_s: float) -> str:
    """Greet every NATS server in `address` at once (`nats.servers`, else `nats.address`), no session.

    Healthy while any answers with INFO, naming those that do and those that do not (a cluster
    that lost a node still carries updates); raises ConnectionError naming each failure if none
    does. Each server gets a little less than `timeout_s`, so a silent one cannot use up the
    whole check.
    """
    urls = nats_servers(address).urls
    results = await asyncio.gather(*(_greet(url, timeout_s * 0.9) for url in urls))
    answering = [where for where, failure in results if not failure]
    failures = [f"{where}: {failure}" for where, failure in results if failure]
    if not answering:
        raise ConnectionError("; ".join(failures))
    if not failures:
        return ", ".join(answering)
    return f"{', '.join(answering)} ({len(answering)} of {len(urls)} answer; {'; '.join(failures)})"


async def _greet(url: str, timeout_s: float) -> tuple[str, str]:
    """(host:port, "" if it greeted with INFO, else why not)."""
    host, port = nats_host_port(url)
    where = f"{host}:{port}"
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                greeting = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError:
        return where, f"no greeting within {timeout_s * 1000:.0f} ms"
    except OSError as exc:
        return where, exc.strerror or type(exc).__name__
    return where, "" if greeting.startswith(b"INFO") else "not a NATS server"


def _switch_set(status: ModeStatus) -> str:
    """A switch that is not ACTIVE, for the `trading` check: whose, who set it, when, why."""
    pending = status.cancel_open
    return (
        f"{status.mode.value} ({status.scope}): set by {status.set_by or '?'} at {status.set_at} (Unix ms)"
        f"{': ' + status.reason if status.reason else ''}"
        + (
            f", cancel of its open orders pending since {pending.requested_at} (Unix ms)"
            if pending is not None
            else ""
        )
    )
