"""The one map from what a gRPC method raised to the status its caller gets.

Every servicer (OrderService, AdminService, AccountService) runs its work through `answer`
(or hands what its stream raised to `abort_with`), so every error leaves the gateway here:
the service's own errors by the table below (StoreUnavailable, which the order store's
adapters raise for an outage, is UNAVAILABLE with its message; the exchange's errors as the
AccountService needs them), a raw redis error still reaching the gateway as UNAVAILABLE
saying which, and anything else (a bug) as INTERNAL with an error id. The client then reads
"internal error <id>; the gateway log has the details" and the log line, with its
traceback, carries the same id: never a Python class name or an exception's text, which
may hold internals, on the wire.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
import redis.exceptions

from order_execution.exchange.errors import ExchangeError, OrderRejected
from order_execution.gateway.auth import PermissionDenied, Unauthenticated
from order_execution.gateway.updates import SlowSubscriber
from order_execution.orders import metrics as shared_metrics
from order_execution.orders.errors import (
    ExchangeNotAccepting,
    InvalidOrder,
    NotReplicated,
    OrderAlreadyExists,
    OrderNotAmendable,
    OrderNotCancelable,
    OrderNotFound,
    Overloaded,
    ResumePointExpired,
    RiskLimitExceeded,
    StoreConflict,
    StoreUnavailable,
    SymbolRulesUnavailable,
)
from order_execution.orders.store_outages import outage_of

log = logging.getLogger(__name__)

T = TypeVar("T")
Context = grpc.aio.ServicerContext[Any, Any]

# The service's errors, the most specific first; the message is the prefix, then the error's text.
_STATUS: tuple[tuple[type[Exception], grpc.StatusCode, str], ...] = (
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED, ""),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, ""),
    (RiskLimitExceeded, grpc.StatusCode.FAILED_PRECONDITION, ""),  # before InvalidOrder, its base
    (InvalidOrder, grpc.StatusCode.INVALID_ARGUMENT, ""),
    (OrderAlreadyExists, grpc.StatusCode.ALREADY_EXISTS, ""),
    # On the primary only: the message names the ids to retry with (a retry returns the same order).
    (NotReplicated, grpc.StatusCode.UNAVAILABLE, ""),
    (StoreUnavailable, grpc.StatusCode.UNAVAILABLE, ""),
    (ExchangeNotAccepting, grpc.StatusCode.UNAVAILABLE, ""),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
    (SlowSubscriber, grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
    (ResumePointExpired, grpc.StatusCode.OUT_OF_RANGE, ""),
    (OrderNotFound, grpc.StatusCode.NOT_FOUND, ""),
    (OrderNotCancelable, grpc.StatusCode.FAILED_PRECONDITION, ""),
    (OrderNotAmendable, grpc.StatusCode.FAILED_PRECONDITION, ""),
    (SymbolRulesUnavailable, grpc.StatusCode.UNAVAILABLE, ""),
    (StoreConflict, grpc.StatusCode.ABORTED, ""),
    # AccountService calls the exchange itself: a refusal is the account's state, the rest
    # (not sent, no answer, budget) means the exchange could not take the call now.
    (OrderRejected, grpc.StatusCode.FAILED_PRECONDITION, "the exchange refused: "),
    (ExchangeError, grpc.StatusCode.UNAVAILABLE, "the exchange could not take it: "),
)


def store_failure_message(exc: BaseException) -> str | None:
    """What UNAVAILABLE says for a raw redis-py outage error, or None if `exc` is not one.

    The order store's adapters raise StoreUnavailable themselves; this covers a redis call made
    outside them, with the same texts (orders.store_outages holds them, once).
    """
    outage = outage_of(exc)
    return None if outage is None else str(outage)


def status_of(exc: Exception) -> grpc.StatusCode:
    """The gRPC status `exc` answers with (INTERNAL for one not mapped)."""
    return _status_and_message(exc)[0]


def _status_and_message(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The status and the client's message for a mapped error; ("INTERNAL", "") for a bug."""
    for kind, code, prefix in _STATUS:
        if isinstance(exc, kind):
            return code, f"{prefix}{exc}"
    store_failure = store_failure_message(exc)
    if store_failure is not None:
        return grpc.StatusCode.UNAVAILABLE, store_failure
    return grpc.StatusCode.INTERNAL, ""


async def abort_with(context: Context, exc: Exception) -> NoReturn:
    """End the call with the status `exc` maps to (see the module docstring); always raises.

    An abort already under way (grpc's AbortError) passes through unchanged. An unmapped error
    is logged at ERROR, with its traceback, under a fresh 12-hex-digit error id that the
    client's INTERNAL message names.
    """
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    code, message = _status_and_message(exc)
    if isinstance(exc, Overloaded):
        shared_metrics.rate_limit_hit(exc.limit, exc.account)
    if code is grpc.StatusCode.INTERNAL:
        error_id = secrets.token_hex(6)
        log.error("internal error %s: %r", error_id, exc, exc_info=exc)
        message = f"internal error {error_id}; the gateway log has the details"
    elif isinstance(exc, redis.exceptions.RedisError):
        log.error("%s (%r)", message, exc)
    await context.abort(code, message)
    raise exc  # context.abort raises; this line keeps the type checker (and a fake context) honest


async def answer(context: Context, call: Callable[[], Awaitable[T]]) -> T:
    """Run `call` and return its result; whatever it raises ends the call through `abort_with`."""
    try:
        return await call()
    except Exception as exc:
        await abort_with(context, exc)
