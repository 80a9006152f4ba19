"""The gateway's Prometheus metrics, under the original service's names."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

ORDERS_CREATED = Counter("order_execution_orders_created_total", "Orders accepted and queued")
ORDERS_REJECTED = Counter("order_execution_orders_rejected_total", "CreateOrder calls refused by the gateway")
ORDERS_CANCELED = Counter("order_execution_orders_canceled_total", "Cancel requests accepted")
ORDER_LATENCY = Histogram(
    "order_execution_order_latency_seconds",
    "CreateOrder time from request to queued reply",
    buckets=_BUCKETS,
)
UPDATE_STREAMS = Gauge("order_execution_update_streams", "Open StreamOrderUpdates calls")
RATE_LIMIT_HITS = Counter(
    "order_execution_rate_limit_hits_total", "Requests the gateway refused for a rate limit", ["limit"]
)
EXCHANGE_BAN_SECONDS = Gauge(
    "order_execution_exchange_block_seconds", "Seconds every replica still holds off sending (429/418)"
)
RATE_BUDGET_USED = Gauge(
    "order_execution_rate_budget_used", "The shared budget's counters in the current window", ["window"]
)
