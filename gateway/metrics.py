"""The gateway's metrics: the shared ones it moves (orders/metrics.py), its own, and the
cluster-wide gauges one task reads from Redis on a timer (gateway/cluster_gauges.py).

`order_refused` counts the gateway's share of `order_execution_orders_rejected_total`
(stage="gateway": CreateOrder refused); orders rejected at or for the exchange count
under stage="exchange" where that happens. Orders canceled count where they reach
CANCELED (the store); `ORDERS_CANCELED` here counts cancel requests the gateway accepted.
Every `account` label is bounded (`orders.metrics.account_label`).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from order_execution.orders import metrics as shared

ORDERS_CREATED = shared.ORDERS_CREATED
ORDER_LATENCY = shared.ORDER_LATENCY
RATE_LIMIT_HITS = shared.RATE_LIMIT_HITS
ORDERS_CANCELED = Counter("order_execution_cancel_requests_total", "CancelOrder requests accepted")
UPDATE_STREAMS = Gauge("order_execution_update_streams", "Open StreamOrderUpdates calls")


def order_answered(account: str, seconds: float, *, created: bool) -> None:
    """CreateOrder answered with an order on `account` after `seconds`: one it stored and queued
    (`created`), or the one its client order id already named."""
    label = shared.account_label(account)
    if created:
        ORDERS_CREATED.labels(label).inc()
    ORDER_LATENCY.labels(label).observe(seconds)


def order_refused(account: str) -> None:
    """CreateOrder refused an order for `account` ("other" when it names none we trade)."""
    shared.ORDERS_REJECTED.labels("gateway", shared.account_label(account)).inc()


# Read from Redis by the cluster-gauge task: the whole cluster's view, whichever gateway is scraped.
# `account`: the configured accounts (queues, budgets), and "other" for orders of any other.
EXCHANGE_BAN_SECONDS = Gauge(
    "order_execution_exchange_block_seconds",
    "Seconds every replica still holds off sending for the account (429/418)",
    ["account"],
)
EXCHANGE_BANNED = Gauge(
    "order_execution_exchange_banned",
    "1 while the exchange has banned the IP the account sends from (418), else 0",
    ["account"],
)
RATE_BUDGET_USED = Gauge(
    "order_execution_rate_budget_used",
    "The account's shared budget: its counters in the current window (weight_1m: its egress IP's)",
    ["window", "account"],
)
RATE_BUDGET_REMAINING = Gauge(
    "order_execution_rate_budget_remaining",
    "What is left of the account's shared budget in the current window (our share of the exchange's limits)",
    ["window", "account"],
)
RATE_BUDGET_LIMIT = Gauge(
    "order_execution_rate_budget_limit",
    "Our share of the exchange's limit per window for the account (after safety margin; "
    "cancels' reserve included)",
    ["window", "account"],
)
QUEUE_DEPTH = Gauge(
    "order_execution_queue_depth", "Messages waiting in the (account, symbol) queue", ["symbol", "account"]
)
QUEUE_DELAYED = Gauge(
    "order_execution_queue_delayed",
    "Delayed messages (retries, scheduled queries) of the (account, symbol) queue",
    ["symbol", "account"],
)
QUEUE_DEAD_LETTERS = Gauge(
    "order_execution_queue_dead_letters",
    "Dead-lettered messages of the (account, symbol) queue",
    ["symbol", "account"],
)
ORDER_STATE = Gauge(
    "order_execution_orders_by_state",
    "Unsettled orders by state and account (UNKNOWN: sent, answer lost); final states only while "
    "fills are missing",
    ["state", "account"],
)
ORDERS_UNSETTLED = Gauge("order_execution_orders_unsettled", "Orders not yet settled, every state")
USER_STREAM_CONNECTED = Gauge(
    "order_execution_user_stream_connected",
    "1 while the user-data stream of the account's leading listener is connected",
    ["account"],
)
LISTENER_LEADING = Gauge(
    "order_execution_listener_leading", "1 while a listener holds the account's lease", ["account"]
)
WORKERS_CONSUMING = Gauge(
    "order_execution_workers_consuming", "Worker processes with a fresh heartbeat on the queues"
)

# Calls refused for their API key: "missing_key" (none sent) or "invalid_key" (unknown or malformed).
AUTH_FAILURE_REASONS = ("missing_key", "invalid_key")
AUTH_FAILURES = Counter(
    "order_execution_auth_failures_total", "Calls refused for a missing or invalid API key", ["reason"]
)
for _reason in AUTH_FAILURE_REASONS:  # every known reason has a series from the start, at 0
    AUTH_FAILURES.labels(_reason)
