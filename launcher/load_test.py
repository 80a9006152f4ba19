"""Load-test mode (`order-execution up --no-rate-limits`, the benchmarks, the load tests).

A load test measures the service, not the exchange's limits or ours: the simulator runs
without its request-weight and order-count limits, and the service without its shared
rate budget and its per-client admission rate. Everything else (validation, the queued
per-symbol cap, the breaker) stays on. Never point this mode at a real exchange.
"""

from __future__ import annotations

SIMULATOR_ARGS = ("--no-rate-limits",)

SERVICE_ENV = {
    "ORDER_EXECUTION__RATE_LIMIT__ENABLED": "false",
    "ORDER_EXECUTION__ADMISSION__CLIENT_REQUESTS_PER_SECOND": "1000000",
    "ORDER_EXECUTION__ADMISSION__CLIENT_BURST": "1000000",
}

BANNER = (
    "LOAD-TEST MODE (--no-rate-limits): the simulator enforces no rate limits and the service "
    "keeps no rate budget and no per-client rate. Never use it against a real exchange."
)
