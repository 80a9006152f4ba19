"""Prometheus metrics every process shares, under the original service's names.

Each process (gateway, worker, listener) counts what happens in it and serves its own
`/metrics`; Prometheus adds the series up across instances. A counter inc is the only
cost on the order path: nothing here touches Redis.

Label values are bounded so a client cannot grow the series set: symbols are the
configured `symbols` (anything else is "other"), accounts the configured account names
(anything else is "other"; "" on a rate-limit hit that is no account's, the gateway's
per-client limits), endpoints come from the exchange client's fixed table, error codes
from a known list (else "other").

Series whose label values are all known exist at 0 from the start, so `rate()` counts
their first increase: the metrics with an `account` label register their known label
sets (`per_account`), and `set_accounts` / `set_symbols` create them for the configured
accounts and symbols.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

from order_execution.orders.model import DEFAULT_ACCOUNT, Order, OrderState

# No `_created` series: nothing here reads them, and with every known label value created at 0
# (so `rate()` counts a series' first increase) they would double the page each scrape renders.
disable_created_metrics()  # type: ignore[no-untyped-call]

OTHER = "other"
NO_ACCOUNT = ""  # the account label of a rate-limit hit that is no account's (see RATE_LIMITS)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

_symbols: frozenset[str] = frozenset()
# Until `set_accounts` (a process that never calls it trades the single account "default").
_accounts: frozenset[str] = frozenset({DEFAULT_ACCOUNT})


def set_symbols(symbols: Iterable[str]) -> None:
    """The symbols that get a label value of their own (the settings' `symbols`), set once at start."""
    global _symbols
    _symbols = frozenset(symbols)
    _create_account_series()


def set_accounts(accounts: Iterable[str]) -> None:
    """The accounts that get a label value of their own (the settings' `account_names`), set once
    at start, before anything is counted.

    Creates every registered per-account series of each account at 0, and removes those created
    for an account no longer in the set (so a configuration without the account "default"
    serves none of its series, nor counts of its own).
    """
    global _accounts
    accounts = frozenset(accounts)
    dropped = _accounts - accounts
    _accounts = accounts
    for series in _PER_ACCOUNT:
        series.drop(dropped)
    _create_account_series()


def symbol_label(symbol: str) -> str:
    """`symbol` if it is a configured symbol, else "other"."""
    return symbol if symbol in _symbols else OTHER


def account_label(account: str) -> str:
    """`account` if it is a configured account, else "other"."""
    return account if account in _accounts else OTHER


def account_labels() -> tuple[str, ...]:
    """The configured accounts' label values, sorted."""
    return tuple(sorted(_accounts))


def bounded(value: str, allowed: Iterable[str] | frozenset[str]) -> str:
    """`value` if it is one of `allowed`, else "other"."""
    return value if value in allowed else OTHER


LabelSets = Callable[[], Iterable[tuple[str, ...]]]


def _no_other_labels() -> Iterable[tuple[str, ...]]:
    return ((),)


@dataclass
class _PerAccount:
    """A metric whose last label is `account`, and the known values of its other labels."""

    metric: Counter | Histogram
    label_sets: LabelSets
    other: bool  # "other" gets the series too (orders of an account no longer configured)
    created: set[tuple[str, ...]] = field(default_factory=set)

    def create(self) -> None:
        accounts = (*_accounts, OTHER) if self.other else tuple(_accounts)
        for labels in self.label_sets():
            for account in accounts:
                self.metric.labels(*labels, account)
                self.created.add((*labels, account))

    def drop(self, accounts: frozenset[str]) -> None:
        for labels in [created for created in self.created if created[-1] in accounts]:
            with contextlib.suppress(KeyError):  # already removed (a metric registered twice)
                self.metric.remove(*labels)
            self.created.discard(labels)


_PER_ACCOUNT: list[_PerAccount] = []


def per_account(
    metric: Counter | Histogram, label_sets: LabelSets = _no_other_labels, *, other: bool = False
) -> None:
    """Keep a series of `metric` (its last label `account`) at 0 for every configured account and
    every label set `label_sets()` gives for its other labels (called again after `set_symbols`);
    `other`: for the label "other" too. Creates them now for the accounts configured so far."""
    series = _PerAccount(metric, label_sets, other)
    _PER_ACCOUNT.append(series)
    series.create()


def _create_account_series() -> None:
    for series in _PER_ACCOUNT:
        series.create()


# --- orders ------------------------------------------------------------------------

ORDERS_CREATED = Counter(
    "order_execution_orders_created_total", "Orders accepted, stored and queued, by account", ["account"]
)
ORDERS_FILLED = Counter(
    "order_execution_orders_filled_total", "Orders that reached FILLED", ["symbol", "account"]
)
ORDERS_CANCELED = Counter(
    "order_execution_orders_canceled_total", "Orders that reached CANCELED", ["symbol", "account"]
)
ORDERS_REJECTED = Counter(
    "order_execution_orders_rejected_total",
    "Orders refused: by the gateway (stage=gateway) or rejected at/for the exchange (stage=exchange)",
    ["stage", "account"],
)
ORDER_LATENCY = Histogram(
    "order_execution_order_latency_seconds",
    "CreateOrder time from request to queued reply, by the order's account",
    ["account"],
    buckets=LATENCY_BUCKETS,
)
ORDER_STATE_CHANGES = Counter(
    "order_execution_order_state_changes_total", "Order state changes stored, by new state", ["state"]
)
CACHE_HITS = Counter(
    "order_execution_cache_hits_total", "Order lookups (by id or client id) found in Redis", ["cache"]
)
CACHE_MISSES = Counter(
    "order_execution_cache_misses_total", "Order lookups (by id or client id) not found in Redis", ["cache"]
)

# --- pre-trade risk ------------------------------------------------------------------

RISK_REFUSALS = Counter(
    "order_execution_risk_refusals_total",
    "Orders the gateway refused for a risk limit or the kill switch, by limit",
    ["limit"],
)
RISK_LIMITS = (
    "allowed_symbols",
    "max_order_quantity",
    "max_order_notional",
    "max_position_quantity",
    "max_open_orders",
    "max_orders_per_day",
    "price_band_percent",
    "percent_price",
    "mark_price",
    "trading_mode",
)
TRADING_MODE = Gauge(
    "order_execution_trading_mode",
    "The kill switch as this process last read it: 0 active, 1 reducing, 2 halted",
)

# --- exchange ----------------------------------------------------------------------

EXCHANGE_REQUESTS = Counter(
    "order_execution_exchange_requests_total",
    "REST requests sent to the exchange, by the account whose key sent them",
    ["endpoint", "account"],
)
EXCHANGE_ERRORS = Counter(
    "order_execution_exchange_errors_total",
    "REST requests that failed: Binance error code, http_<status>, not_sent or no_answer",
    ["endpoint", "code", "account"],
)
EXCHANGE_LATENCY = Histogram(
    "order_execution_exchange_latency_seconds",
    "REST round trip to the exchange (sent to answered or failed)",
    ["endpoint", "account"],
    buckets=LATENCY_BUCKETS,
)
RATE_LIMIT_HITS = Counter(
    "order_execution_rate_limit_hits_total",
    "Requests held back or refused for a rate limit (gateway admission, shared budget, exchange 429/418), "
    'by account ("" for the per-client limits)',
    ["limit", "account"],
)
# Limits of an exchange account: its queue bound and rate budget at admission, its shared budget
# making a request wait or refusing it, the exchange's 429/418 to its key.
ACCOUNT_RATE_LIMITS = ("queue_bound", "rate_budget", "budget_wait", "budget_exceeded", "429", "418")
# Limits of an API client or of the gateway, no account's: counted under account "" (NO_ACCOUNT).
CLIENT_RATE_LIMITS = ("client_rate", "max_streams", "max_streams_per_client")
RATE_LIMITS = (*CLIENT_RATE_LIMITS, *ACCOUNT_RATE_LIMITS)
CIRCUIT_BREAKER_STATE = Gauge(
    "order_execution_circuit_breaker_state",
    "Circuit breaker state as this process sees it: 0 closed, 1 half-open, 2 open",
    ["name"],
)
BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}

# --- listener ----------------------------------------------------------------------

RECONCILE_MISMATCHES = Counter(
    "order_execution_reconciliation_mismatches_total",
    "Orders the reconciler found out of line with the exchange and corrected, by kind",
    ["kind"],
)
MISMATCH_KINDS = ("state", "unpicked_expired", "never_placed", "vanished", "foreign_order")
# Per exchange account (its lease, its user-data stream): `account` is a configured account's
# name (settings `accounts`), the only values the listener labels them with.
LISTENER_LEADER = Gauge(
    "order_execution_listener_leader", "1 while this listener replica holds the account's lease", ["account"]
)
LISTENER_USER_STREAM = Gauge(
    "order_execution_listener_user_stream_connected",
    "1 while this listener's user-data stream of the account is connected",
    ["account"],
)
USER_STREAM_LAG = Histogram(
    "order_execution_user_stream_lag_seconds",
    "User-data stream event: from its time at the exchange (E, on the exchange's clock) to stored",
    ["account"],
    buckets=(*LATENCY_BUCKETS, 10.0, 30.0),
)


def order_changed(was: OrderState | None, order: Order) -> None:
    """Count a stored state change (the store calls this once per committed change)."""
    state = order.state
    if state is was:
        return
    ORDER_STATE_CHANGES.labels(state.value).inc()
    if state is OrderState.FILLED:
        ORDERS_FILLED.labels(symbol_label(order.symbol), account_label(order.account)).inc()
    elif state is OrderState.CANCELED:
        ORDERS_CANCELED.labels(symbol_label(order.symbol), account_label(order.account)).inc()
    elif state is OrderState.REJECTED:
        ORDERS_REJECTED.labels("exchange", account_label(order.account)).inc()


def rate_limit_hit(limit: str, account: str = NO_ACCOUNT) -> None:
    """Count a hit of `limit` (else "other"), under `account` (bounded) if the limit is an
    account's, else under "" (the per-client limits)."""
    if limit in CLIENT_RATE_LIMITS:
        RATE_LIMIT_HITS.labels(limit, NO_ACCOUNT).inc()
    else:
        RATE_LIMIT_HITS.labels(bounded(limit, RATE_LIMITS), account_label(account)).inc()


def breaker_state(name: str, state: str) -> None:
    """Set the breaker gauge from pybreaker's state name ("closed", "half-open", "open")."""
    CIRCUIT_BREAKER_STATE.labels(name).set(BREAKER_STATES.get(state, 0))


def _initialise() -> None:
    """Create the fixed label sets at 0, so a series exists (and rates work) before its first event."""
    for state in OrderState:
        ORDER_STATE_CHANGES.labels(state.value)
    per_account(ORDERS_CREATED)
    per_account(ORDER_LATENCY)
    per_account(ORDERS_REJECTED, lambda: (("gateway",), ("exchange",)), other=True)
    per_account(ORDERS_FILLED, lambda: ((symbol,) for symbol in (*_symbols, OTHER)), other=True)
    per_account(ORDERS_CANCELED, lambda: ((symbol,) for symbol in (*_symbols, OTHER)), other=True)
    for limit in CLIENT_RATE_LIMITS:
        RATE_LIMIT_HITS.labels(limit, NO_ACCOUNT)
    per_account(RATE_LIMIT_HITS, lambda: ((limit,) for limit in ACCOUNT_RATE_LIMITS))
    for limit in RISK_LIMITS:
        RISK_REFUSALS.labels(limit)
    for kind in MISMATCH_KINDS:
        RECONCILE_MISMATCHES.labels(kind)
    CACHE_HITS.labels("orders")
    CACHE_MISSES.labels("orders")


_initialise()
