"""Prometheus metrics every process shares, under the original service's names.

Each process (gateway, worker, listener) counts what happens in it and serves its own
`/metrics`; Prometheus adds the series up across instances. A counter inc is the only
cost on the order path: nothing here touches Redis.

Label values are bounded so a client cannot grow the series set: symbols are the
configured `symbols` (anything else is "other"), endpoints come from the exchange
client's fixed table, error codes from a known list (else "other").
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

from order_execution.orders.model import Order, OrderState

# No `_created` series: nothing here reads them, and with every known label value created at 0
# (so `rate()` counts a series' first increase) they would double the page each scrape renders.
disable_created_metrics()  # type: ignore[no-untyped-call]

OTHER = "other"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

_symbols: frozenset[str] = frozenset()


def set_symbols(symbols: Iterable[str]) -> None:
    """The symbols that get a label value of their own (the settings' `symbols`), set once at start."""
    global _symbols
    _symbols = frozenset(symbols)
    for symbol in (*_symbols, OTHER):
        ORDERS_FILLED.labels(symbol)
        ORDERS_CANCELED.labels(symbol)


def symbol_label(symbol: str) -> str:
    """`symbol` if it is a configured symbol, else "other"."""
    return symbol if symbol in _symbols else OTHER


def bounded(value: str, allowed: Iterable[str] | frozenset[str]) -> str:
    """`value` if it is one of `allowed`, else "other"."""
    return value if value in allowed else OTHER


# --- orders ------------------------------------------------------------------------

ORDERS_CREATED = Counter("order_execution_orders_created_total", "Orders accepted, stored and queued")
ORDERS_FILLED = Counter("order_execution_orders_filled_total", "Orders that reached FILLED", ["symbol"])
ORDERS_CANCELED = Counter("order_execution_orders_canceled_total", "Orders that reached CANCELED", ["symbol"])
ORDERS_REJECTED = Counter(
    "order_execution_orders_rejected_total",
    "Orders refused: by the gateway (stage=gateway) or rejected at/for the exchange (stage=exchange)",
    ["stage"],
)
ORDER_LATENCY = Histogram(
    "order_execution_order_latency_seconds",
    "CreateOrder time from request to queued reply",
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
    "order_execution_exchange_requests_total", "REST requests sent to the exchange", ["endpoint"]
)
EXCHANGE_ERRORS = Counter(
    "order_execution_exchange_errors_total",
    "REST requests that failed: Binance error code, http_<status>, not_sent or no_answer",
    ["endpoint", "code"],
)
EXCHANGE_LATENCY = Histogram(
    "order_execution_exchange_latency_seconds",
    "REST round trip to the exchange (sent to answered or failed)",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)
RATE_LIMIT_HITS = Counter(
    "order_execution_rate_limit_hits_total",
    "Requests held back or refused for a rate limit (gateway admission, shared budget, exchange 429/418)",
    ["limit"],
)
RATE_LIMITS = (
    "client_rate",
    "queue_bound",
    "rate_budget",
    "budget_wait",
    "budget_exceeded",
    "429",
    "418",
    "max_streams",
    "max_streams_per_client",
)
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
        ORDERS_FILLED.labels(symbol_label(order.symbol)).inc()
    elif state is OrderState.CANCELED:
        ORDERS_CANCELED.labels(symbol_label(order.symbol)).inc()
    elif state is OrderState.REJECTED:
        ORDERS_REJECTED.labels("exchange").inc()


def breaker_state(name: str, state: str) -> None:
    """Set the breaker gauge from pybreaker's state name ("closed", "half-open", "open")."""
    CIRCUIT_BREAKER_STATE.labels(name).set(BREAKER_STATES.get(state, 0))


def _initialise() -> None:
    """Create the fixed label sets at 0, so a series exists (and rates work) before its first event."""
    for state in OrderState:
        ORDER_STATE_CHANGES.labels(state.value)
    for stage in ("gateway", "exchange"):
        ORDERS_REJECTED.labels(stage)
    for limit in RATE_LIMITS:
        RATE_LIMIT_HITS.labels(limit)
    for limit in RISK_LIMITS:
        RISK_REFUSALS.labels(limit)
    for kind in MISMATCH_KINDS:
        RECONCILE_MISMATCHES.labels(kind)
    CACHE_HITS.labels("orders")
    CACHE_MISSES.labels("orders")


_initialise()
