"""What a CreateOrder's admission reads, per exchange account, kept in the gateway so that an
order's check needs no Redis round trip of its own.

An account's snapshot holds, from ONE pipeline: the account's unsent (accepted, not yet sent)
count, its rate budget's state and its venue's create breaker, and, while the account's unsent
orders number `per_symbol_from` (half `max_queued_per_symbol`) or more, the unsent count of every
symbol this gateway has checked for it. Below that no symbol can be near its bound: the
account's count bounds each symbol's, and the re-read is three commands however many symbols
the account trades. A check (`AccountSnapshots.view`):
- with no snapshot, one older than `admission.snapshot_max_age_ms` (0: always), or one that
  cannot bound the order's symbol below `per_symbol_from` (its per-symbol counts not read, or
  read without this symbol), reads inline, as every check once did;
- with one older than `admission.snapshot_refresh_ms`, answers from it and starts a background
  re-read (at most one in flight per account); a failed one is logged once per outage and
  retried by the next check, and the snapshot ages towards the inline read;
- else answers from it.

An answer from a snapshot adds the orders this gateway admitted that the snapshot may not
count: those still being created, and those created since its read was sent; a burst cannot
pass `max_queued_per_symbol` on a stale count, and the budget's projection has them ahead. The
budget's state is carried to the check's time: the bucket refills at its rate, a block that
has ended is lifted, an ORDERS or weight window that has ended counts nothing. Orders sent in
the meantime took tokens and left the queue alike, so the projection stays as it was.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from order_execution.exchange.breakers import Group, breaker_key
from order_execution.exchange.rate_budget import (
    ORDERS_LONG_WINDOW_MS,
    ORDERS_SHORT_WINDOW_MS,
    WEIGHT_WINDOW_MS,
    BudgetState,
    RateBudget,
)
from order_execution.orders.model import now_ms
from order_execution.orders.store import OrderStore

log = logging.getLogger(__name__)

BreakerState = tuple[bytes | None, bytes | None]  # pybreaker's state and opened_at, as stored


@dataclass(frozen=True, slots=True)
class AccountGate:
    """What admission reads for one exchange account: its shared rate budget (None: not
    checked) and the Redis namespace of its venue's breakers (`exchange.account.breaker_namespace`;
    None: the create breaker is not checked)."""

    budget: RateBudget | None = None
    breaker_namespace: str | None = None

    @property
    def breaker_keys(self) -> list[str] | None:
        """The create breaker's keys (pybreaker's, in the same Redis); None: not checked."""
        if self.breaker_namespace is None:
            return None
        return [
            breaker_key(self.breaker_namespace, Group.CREATE),
            breaker_key(self.breaker_namespace, Group.CREATE, "opened_at"),
        ]


@dataclass(frozen=True, slots=True)
class AdmissionView:
    """What one check judges by: the symbol's and the account's unsent orders, the budget's
    state at `now` (wall ms; None: not checked) and the create breaker's (None: not checked)."""

    queued: int  # at most this many (the account's count when the symbol's was not read)
    ahead: int
    budget: BudgetState | None
    breaker: BreakerState | None
    now: int


@dataclass(frozen=True, slots=True)
class _Snapshot:
    sent: float  # monotonic s, taken before the read was sent: its age is never understated
    at_ms: int  # wall ms the budget was read at
    queued: Mapping[str, int] | None  # per symbol; None: not read (the account's count was low)
    queued_account: int
    budget: BudgetState | None
    breaker: BreakerState | None


@dataclass(eq=False)
class _Read:
    """A read under way, and the orders created since it was sent (which it may miss)."""

    sent: float
    created: Counter[str] = field(default_factory=Counter)


@dataclass(eq=False)
class _Account:
    snapshot: _Snapshot | None = None
    created: Counter[str] = field(default_factory=Counter)  # since the snapshot's read was sent
    in_flight: Counter[str] = field(default_factory=Counter)  # admitted, create not yet done
    reads: list[_Read] = field(default_factory=list)
    refreshing: asyncio.Task[None] | None = None
    symbols: set[str] = field(default_factory=set)  # every symbol checked for the account


class AccountSnapshots:
    """Every account's snapshot, for one gateway (module docstring)."""

    def __init__(
        self,
        store: OrderStore,
        accounts: Mapping[str, AccountGate],
        *,
        refresh_ms: int,
        max_age_ms: int,
        per_symbol_from: int,
    ) -> None:
        self._store = store
        self._gates = accounts
        self._refresh_s = refresh_ms / 1000
        self._max_age_s = max_age_ms / 1000
        self._per_symbol_from = per_symbol_from
        self._accounts: dict[str, _Account] = {}
        self._refresh_failing = False  # one log line per outage, not one per check

    async def view(self, symbol: str, account: str, *, now: int) -> AdmissionView:
        """What a check at `now` (wall ms) of an order for `symbol` on `account` judges by; raises
        what Redis raises when it must read inline."""
        state = self._accounts.setdefault(account, _Account())
        state.symbols.add(symbol)
        snapshot = state.snapshot
        own = state.in_flight + state.created
        age = math.inf if snapshot is None else time.monotonic() - snapshot.sent
        queued = None if snapshot is None else _at_most(snapshot, symbol)
        if (
            snapshot is None
            or age >= self._max_age_s
            or queued is None
            or (snapshot.queued is None and queued + own.total() >= self._per_symbol_from)
        ):
            # A fresh snapshot that could not bound the symbol: the account is near the threshold.
            near = snapshot is not None and age < self._max_age_s
            symbols = sorted(state.symbols) if near else [symbol]
            snapshot = await self._read(account, state, symbols, at_ms=now)
            return AdmissionView(
                queued=_at_most(snapshot, symbol) or 0,
                ahead=snapshot.queued_account,
                budget=snapshot.budget,
                breaker=snapshot.breaker,
                now=snapshot.at_ms,
            )
        if age >= self._refresh_s and state.refreshing is None:
            symbols = self._symbols_to_refresh(state, snapshot, own)
            state.refreshing = asyncio.create_task(self._refresh(account, state, symbols))
        gate = self._gates.get(account)
        budget = gate.budget if gate is not None else None
        mine = own[symbol] if snapshot.queued is not None else own.total()
        return AdmissionView(
            queued=queued + mine,
            ahead=snapshot.queued_account + own.total(),
            budget=(
                _carried(snapshot.budget, budget, snapshot.at_ms, now)
                if snapshot.budget is not None and budget is not None
                else None
            ),
            breaker=snapshot.breaker,
            now=now,
        )

    def _symbols_to_refresh(self, state: _Account, snapshot: _Snapshot, own: Counter[str]) -> list[str]:
        """The symbols whose unsent counts a re-read takes: every one checked for the account once
        its count (as last read, plus this gateway's orders since) reaches the threshold, else none."""
        if snapshot.queued_account + own.total() >= self._per_symbol_from:
            return sorted(state.symbols)
        return []

    def admitted(self, symbol: str, account: str) -> None:
        """An order for `symbol` on `account` passed its check; its create comes next."""
        self._accounts.setdefault(account, _Account()).in_flight[symbol] += 1

    def create_done(self, symbol: str, account: str) -> None:
        """The create of an order `admitted` is over (stored, or failed): a read sent from now
        on counts it, the snapshot and the reads under way may not."""
        state = self._accounts.setdefault(account, _Account())
        if state.in_flight[symbol] <= 1:
            state.in_flight.pop(symbol, None)
        else:
            state.in_flight[symbol] -= 1
        state.created[symbol] += 1
        for read in state.reads:
            read.created[symbol] += 1

    async def _refresh(self, account: str, state: _Account, symbols: list[str]) -> None:
        try:
            await self._read(account, state, symbols, at_ms=now_ms())
        except Exception as exc:  # a background read must not fail an order: logged, retried
            if not self._refresh_failing:
                self._refresh_failing = True
                log.warning(
                    "admission snapshot refresh of account %s failed (%r); answering from the last "
                    "snapshot until it is too old, then reading inline",
                    account,
                    exc,
                )
        finally:
            state.refreshing = None

    async def _read(self, account: str, state: _Account, symbols: list[str], *, at_ms: int) -> _Snapshot:
        """Read the account's snapshot (its budget as at `at_ms`) in one pipeline; keep it unless
        one sent later is kept."""
        gate = self._gates.get(account) or AccountGate()
        budget, breaker_keys = gate.budget, gate.breaker_keys
        read = _Read(time.monotonic())
        state.reads.append(read)
        try:
            if budget is not None:
                await budget.refresh_limits()
            pipe = self._store.pipeline()
            read_queued = self._store.read_unsent_counts(pipe, symbols, account)
            read_budget = budget.read_state(pipe, at_ms=at_ms) if budget is not None else None
            if breaker_keys is not None:
                pipe.mget(breaker_keys)
            results = await pipe.execute()
        finally:
            state.reads.remove(read)
        queued, queued_account = read_queued(results)
        snapshot = _Snapshot(
            sent=read.sent,
            at_ms=at_ms,
            # Below the threshold the account's count bounds every symbol's: per-symbol counts unkept.
            queued=queued if queued_account >= self._per_symbol_from else None,
            queued_account=queued_account,
            budget=read_budget(results[len(symbols) + 1 :]) if read_budget is not None else None,
            breaker=(results[-1][0], results[-1][1]) if breaker_keys is not None else None,
        )
        if state.snapshot is None or read.sent >= state.snapshot.sent:
            state.snapshot, state.created = snapshot, read.created
        if self._refresh_failing:
            self._refresh_failing = False
            log.info("admission snapshot read again after a failed refresh")
        return snapshot


def _at_most(snapshot: _Snapshot, symbol: str) -> int | None:
    """How many of `symbol`'s orders `snapshot` says are unsent, at most: its own count, else the
    account's when per-symbol counts were not read; None: read, but not this symbol's."""
    if snapshot.queued is None:
        return snapshot.queued_account
    return snapshot.queued.get(symbol)


def _carried(state: BudgetState, budget: RateBudget, at_ms: int, now: int) -> BudgetState:
    """`state`, read at `at_ms`, as it stands at `now` with no request sent since (module docstring)."""

    def same_window(span_ms: int) -> bool:
        return at_ms // span_ms == now // span_ms

    blocked = state.blocked_until_ms > now
    return replace(
        state,
        tokens=min(budget.burst, state.tokens + max(0, now - at_ms) * budget.requests_per_second / 1000),
        weight_used=state.weight_used if same_window(WEIGHT_WINDOW_MS) else 0,
        orders_10s=state.orders_10s if same_window(ORDERS_SHORT_WINDOW_MS) else 0,
        orders_1m=state.orders_1m if same_window(ORDERS_LONG_WINDOW_MS) else 0,
        blocked_until_ms=state.blocked_until_ms if blocked else 0,
        blocked_reason=state.blocked_reason if blocked else "",
    )
