"""The exchange client's metrics: what was sent, how long it took, how it failed.

Label values are bounded: an endpoint is one of `ENDPOINTS`, the labels of the client's
endpoint table in exchange/endpoints.py (else "other"), an error code one of the Binance
codes this service knows (else "other"), `http_<status>` for an answer without a code, or
`not_sent` / `no_answer` when no answer came. Each series also names the `account` whose
client sent the request (a configured account name, else "other": `orders.metrics.account_label`).
"""

from __future__ import annotations

from order_execution.exchange.endpoints import TABLE
from order_execution.exchange.errors import ExchangeError, RateLimited
from order_execution.orders import metrics
from order_execution.orders.metrics import OTHER, account_label, bounded

# The `endpoint` label values: one per row of the client's endpoint table (exchange/endpoints.py).
ENDPOINTS = frozenset(endpoint.label for endpoint in TABLE)
# Binance codes worth a series of their own: ambiguous outcomes, overload, clock, lookups,
# and the business rejections an operator acts on (margin, post-only, filters, keys).
KNOWN_CODES = frozenset(
    str(code)
    for code in (
        -1000, -1001, -1003, -1006, -1007, -1008, -1013, -1015, -1021, -1022, -1102, -1111, -1116,
        -1117, -1125, -2010, -2011, -2013, -2014, -2015, -2019, -2022, -4003, -4116, -4164, -5022,
    )
)  # fmt: skip
_KNOWN_STATUSES = frozenset({400, 401, 403, 404, 408, 409, 418, 429, 500, 502, 503, 504})
NOT_SENT = "not_sent"
NO_ANSWER = "no_answer"
# Every value the `code` label can take (see error_code, record_error's callers).
ERROR_CODES = frozenset(
    {
        *KNOWN_CODES,
        *(f"http_{status}" for status in _KNOWN_STATUSES),
        "http_other",
        OTHER,
        NOT_SENT,
        NO_ANSWER,
    }
)


def endpoint_label(method: str, path: str) -> str:
    """`"<METHOD> <path>"` for an endpoint of the client's table, else "other"."""
    return bounded(f"{method} {path}", ENDPOINTS)


def error_code(exc: ExchangeError) -> str:
    """The bounded `code` label of a classified error answer."""
    if exc.code is not None:
        return bounded(str(exc.code), KNOWN_CODES)
    if exc.status is not None:
        return f"http_{exc.status}" if exc.status in _KNOWN_STATUSES else "http_other"
    return OTHER


def record_sent(endpoint: str, seconds: float, account: str) -> None:
    """A request of `account`'s client went out and its round trip ended (answered or not)
    after `seconds`."""
    label = account_label(account)
    metrics.EXCHANGE_REQUESTS.labels(endpoint, label).inc()
    metrics.EXCHANGE_LATENCY.labels(endpoint, label).observe(seconds)


def record_error(endpoint: str, code: str, account: str) -> None:
    """A request of `account`'s client failed with `code` (one of ERROR_CODES)."""
    metrics.EXCHANGE_ERRORS.labels(endpoint, code, account_label(account)).inc()


def record_answer_error(endpoint: str, exc: ExchangeError, account: str) -> None:
    """An answer that is an error: counted by code, and a 429/418 as a rate-limit hit of `account`."""
    record_error(endpoint, error_code(exc), account)
    if isinstance(exc, RateLimited) and exc.status in (418, 429):
        metrics.rate_limit_hit(str(exc.status), account)


def record_budget(limit: str, account: str) -> None:
    """`account`'s shared budget made a request wait ("budget_wait") or refused it ("budget_exceeded")."""
    metrics.rate_limit_hit(limit, account)


def _initialise() -> None:
    """Have every endpoint's series, and every endpoint x code error series, exist at 0 for each
    configured account (`orders.metrics.set_accounts`), so each exists (and `rate()` counts its
    first increase) before its first event."""
    endpoints = [(endpoint,) for endpoint in (*ENDPOINTS, OTHER)]
    metrics.per_account(metrics.EXCHANGE_REQUESTS, lambda: endpoints)
    metrics.per_account(metrics.EXCHANGE_LATENCY, lambda: endpoints)
    errors = [(endpoint, code) for (endpoint,) in endpoints for code in ERROR_CODES]
    metrics.per_account(metrics.EXCHANGE_ERRORS, lambda: errors)


_initialise()
