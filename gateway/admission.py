"""Admission: refuse at once what the account could not send in time, instead of queueing it into expiry.

Before an order is stored the gateway checks, in order:
1. the client's own request rate (`admission.client_requests_per_second` / `client_burst`,
   per API client with its own `auth.clients[].requests_per_second` if set; with auth off
   per user_id, else per peer; in this gateway) — a runaway strategy cannot flood the queue.
   Reads (GetOrder, ListOrders, a StreamOrderUpdates open) are charged to the same bucket at
   `admission.read_cost` of a request. A bucket unused for `admission.client_idle_s` and full
   again is forgotten: it would answer exactly as a new one, and a caller-chosen user_id
   cannot grow the table without bound;
2. the symbol's queue of accepted-but-unsent orders of the order's exchange account
   (`admission.max_queued_per_symbol`);
3. the create breaker of the account's venue: open → UNAVAILABLE "circuit breaker
   binance_create_order is open"; an exchange ban (418) → UNAVAILABLE until it ends;
4. the account's shared rate budget: if this order, behind every order already queued for
   the account, could not go out before its `max_order_age_ms`, RESOURCE_EXHAUSTED with the wait.

Checks 2-4 are per exchange account (`AccountGate`): one account's full queue, open breaker
or spent budget refuses that account's orders only (the breaker is shared by the accounts of
one venue, as the workers share it).

Checks 2-4 judge by the account's snapshot of its queues, budget and breaker, which the gateway
re-reads in one pipeline in the background once it is `admission.snapshot_refresh_ms` old (50)
and reads inline, on the order's path, only when there is none or it is older than
`admission.snapshot_max_age_ms` (1000; 0: every check reads inline, so another process's write
is seen by the very next check); orders this gateway let through since count on top of it
(`gateway.admission_snapshot`).

The budget estimate is the longest of: the token bucket serving the queue at its rate,
each ORDERS window's remaining room, and a block after 429/418.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

from order_execution.exchange.breakers import Group
from order_execution.exchange.rate_budget import (
    ORDERS_LONG_WINDOW_MS,
    ORDERS_SHORT_WINDOW_MS,
    BudgetState,
    Priority,
    RateBudget,
)
from order_execution.gateway.admission_snapshot import AccountGate, AccountSnapshots
from order_execution.orders.errors import ExchangeNotAccepting, Overloaded
from order_execution.orders.model import DEFAULT_ACCOUNT, now_ms
from order_execution.orders.store import OrderStore
from order_execution.runtime.settings import AdmissionSettings, CircuitBreakerSettings

__all__ = ["AccountGate", "Admission"]  # AccountGate lives with the snapshots that read by it


@dataclass
class _Bucket:
    """A client's token bucket: `tokens` as of `at` (monotonic s), refilling at `rate` up to `burst`."""

    tokens: float
    at: float
    rate: float
    burst: int

    def refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def full_at(self, now: float) -> bool:
        return self.tokens + (now - self.at) * self.rate >= self.burst


class Admission:
    """The checks above, for one gateway."""

    def __init__(
        self,
        *,
        store: OrderStore,
        settings: AdmissionSettings,
        max_order_age_ms: int,
        accounts: Mapping[str, AccountGate] | None = None,
        breaker_settings: CircuitBreakerSettings | None = None,
    ) -> None:
        """`accounts` holds each exchange account's gate; an account without one has only its
        queue bound checked (None: no account has one)."""
        self._settings = settings
        self._max_age_ms = max_order_age_ms
        self._accounts = dict(accounts or {})
        self._snapshots = AccountSnapshots(
            store,
            self._accounts,
            refresh_ms=settings.snapshot_refresh_ms,
            max_age_ms=settings.snapshot_max_age_ms,
            per_symbol_from=max(settings.max_queued_per_symbol // 2, 1),
        )
        self._breaker_timeout_s = (breaker_settings or CircuitBreakerSettings()).timeout
        # In order of last use (a used bucket moves to the end), so idle ones are found first.
        self._clients: dict[str, _Bucket] = {}
        self._next_sweep = 0.0

    @property
    def tracked_clients(self) -> int:
        """How many clients' rate buckets this gateway holds now."""
        return len(self._clients)

    def check_client(
        self, client: str, *, rate: float | None = None, burst: int | None = None, read: bool = False
    ) -> None:
        """Charge one request to `client`'s bucket, or `admission.read_cost` of one for a `read`;
        raises Overloaded (limit "client_rate") when the bucket holds less than that.

        `rate` (requests/s) and `burst` are the client's own; None: the admission settings'.
        """
        rate = rate or self._settings.client_requests_per_second
        burst = burst or self._settings.client_burst
        cost = self._settings.read_cost if read else 1.0
        now = time.monotonic()
        self._forget_idle(now)
        bucket = self._clients.pop(client, None) or _Bucket(float(burst), now, rate, burst)
        self._clients[client] = bucket
        bucket.rate, bucket.burst = rate, burst
        bucket.refill(now)
        if bucket.tokens < cost:
            wait_ms = math.ceil((cost - bucket.tokens) / rate * 1000)
            what = f" (a read costs admission.read_cost={cost:g} of a request)" if read else ""
            raise Overloaded(
                f"client {client}: over {rate:g} requests/s{what}; slow down (retry in {wait_ms} ms)",
                limit="client_rate",
            )
        bucket.tokens -= cost

    def _forget_idle(self, now: float) -> None:
        """Drop the buckets unused for `client_idle_s` that are full again; at most once a second."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + min(1.0, self._settings.client_idle_s)
        idle_since = now - self._settings.client_idle_s
        forget: list[str] = []
        for client, bucket in self._clients.items():
            if bucket.at > idle_since:
                break  # every later one was used more recently
            if bucket.full_at(now):  # one still refilling (a slow client's own rate) is kept
                forget.append(client)
        for client in forget:
            del self._clients[client]

    async def check_create(self, symbol: str, account: str = DEFAULT_ACCOUNT) -> None:
        """Raise Overloaded or ExchangeNotAccepting if an order for `symbol` on exchange account
        `account` should not be accepted now; an order it lets through counts as this gateway's
        until `create_done`.

        It judges by the account's snapshot (`gateway.admission_snapshot`): most checks make no
        Redis call; one that must read inline raises what Redis raises.
        """
        gate = self._accounts.get(account, AccountGate())
        view = await self._snapshots.view(symbol, account, now=now_ms())
        queued, ahead = view.queued, view.ahead
        on = "" if account == DEFAULT_ACCOUNT else f" on account {account}"  # one account: unsaid
        if queued >= self._settings.max_queued_per_symbol:
            raise Overloaded(
                f"symbol: {symbol} has {queued} orders accepted and not yet sent{on} "
                f"(admission.max_queued_per_symbol={self._settings.max_queued_per_symbol}); retry later",
                limit="queue_bound",
                account=account,
            )
        if view.breaker is not None:
            self._check_breaker(*view.breaker)
        if gate.budget is not None and view.budget is not None:
            self._check_budget(gate.budget, view.budget, ahead=ahead, now=view.now, on=on, account=account)
        self._snapshots.admitted(symbol, account)

    def create_done(self, symbol: str, account: str = DEFAULT_ACCOUNT) -> None:
        """The create of an order `check_create` let through is over, stored or not: call it once
        per such order, after the store answered or failed."""
        self._snapshots.create_done(symbol, account)

    def _check_budget(
        self, budget: RateBudget, state: BudgetState, *, ahead: int, now: int, on: str, account: str
    ) -> None:
        if state.blocked_reason.startswith("418"):
            raise ExchangeNotAccepting(f"the exchange banned this IP: {state.blocked_reason}")
        wait_ms, limited_by = self.projected_wait_ms(budget, state, ahead=ahead, now=now)
        # The projection is to the start of the order's window; leave room for it to go out then.
        if wait_ms > self._max_age_ms - min(1000, self._max_age_ms // 10):
            raise Overloaded(
                f"rate budget: this order would wait about {wait_ms} ms for {limited_by} "
                f"({ahead} orders queued ahead{on}): too late for max_order_age_ms={self._max_age_ms}; "
                "retry later or raise rate_limit settings",
                limit="rate_budget",
                account=account,
            )

    @staticmethod
    def projected_wait_ms(budget: RateBudget, state: BudgetState, *, ahead: int, now: int) -> tuple[int, str]:
        """How long an order queued behind `ahead` others would wait for `budget` (in `state`),
        and why."""
        needed = ahead + 1
        waits: list[tuple[int, str]] = [
            (max(0, state.blocked_until_ms - now), state.blocked_reason or "a block")
        ]
        usable = state.tokens - budget.burst * budget.cancel_reserve
        if needed > usable:
            waits.append(
                (math.ceil((needed - usable) / budget.requests_per_second * 1000), "requests_per_second")
            )
        for used, limit, span, name in (
            (state.orders_10s, budget.limits.orders_per_10s, ORDERS_SHORT_WINDOW_MS, "ORDERS per 10 s"),
            (state.orders_1m, budget.limits.orders_per_minute, ORDERS_LONG_WINDOW_MS, "ORDERS per minute"),
        ):
            room = budget.effective(limit, Priority.CREATE)
            if used + needed > room:
                windows = math.ceil((used + needed - room) / room)
                waits.append((span - now % span + (windows - 1) * span, name))
        return max(waits)

    def _check_breaker(self, state: bytes | None, opened_at: bytes | None) -> None:
        if state != b"open":
            return
        # pybreaker moves to half-open on the next call after the timeout: let that call through.
        if opened_at is not None and time.time() >= int(opened_at) + self._breaker_timeout_s:
            return
        raise ExchangeNotAccepting(
            f"circuit breaker {Group.CREATE} is open; the exchange is failing, retry shortly"
        )
