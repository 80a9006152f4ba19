"""The workers' retry policy asks the error whether it is transient (its class's flag), as
Dramatiq's Retries asks `retry_when`; limits and backoffs per actor are the policy's."""

from __future__ import annotations

from typing import Any, cast

import pytest

from order_execution.exchange.errors import (
    BudgetExceeded,
    CircuitOpen,
    ClockSkew,
    DuplicateClientOrderId,
    ExchangeError,
    ExchangeUnavailable,
    NotExecuted,
    OrderNotFoundAtExchange,
    OrderRejected,
    OutcomeUnknown,
    RateLimited,
    UnknownOrder,
)
from order_execution.orders.errors import (
    InvalidOrder,
    NotReplicated,
    OrderNotFound,
    OrderServiceError,
    StoreConflict,
    StoreFailingOver,
    StoreTimedOut,
    StoreUnavailable,
)
from order_execution.tasks.queues import (
    AMEND_ORDER,
    CANCEL_ALL_ORDERS,
    CANCEL_ORDER,
    RECONCILE_ORDER,
    SUBMIT_ORDER,
)
from order_execution.workers.consumer import Handler
from order_execution.workers.execution import CancelNotSettled, OrderExecutor
from order_execution.workers.retry_policy import MAX_CANCEL_RETRIES, MAX_RECONCILE_RETRIES, order_handlers


class _Executor:
    """Stands in for OrderExecutor: the policy only names its methods."""

    async def submit(self, **_: Any) -> None: ...
    async def cancel(self, **_: Any) -> None: ...
    async def cancel_all(self, **_: Any) -> None: ...
    async def amend(self, **_: Any) -> None: ...
    async def reconcile(self, **_: Any) -> None: ...


HANDLERS = order_handlers({"default": cast(OrderExecutor, _Executor())})
RETRYING = {
    CANCEL_ORDER: MAX_CANCEL_RETRIES,
    CANCEL_ALL_ORDERS: MAX_CANCEL_RETRIES,
    AMEND_ORDER: MAX_RECONCILE_RETRIES,
    RECONCILE_ORDER: MAX_RECONCILE_RETRIES,
}

TRANSIENT: list[Exception] = [
    StoreUnavailable("order store (Redis) unreachable; retry shortly"),
    StoreTimedOut("order store (Redis) did not answer"),
    StoreFailingOver("order store (Redis) is failing over"),
    NotReplicated("order o1", "retry", acks=0, needed=1, timeout_ms=500),
    StoreConflict("order o1: gave up"),
    NotExecuted("-1008 overloaded"),
    RateLimited("429", retry_after_s=1.0, code=None, status=429),
    ExchangeUnavailable("could not connect"),
    ClockSkew("-1021"),
    CircuitOpen("open", group="orders"),
    BudgetExceeded("too long", wait_ms=900),
    OutcomeUnknown("no answer"),
    CancelNotSettled("order o1 still open after -2011"),
]
FINAL: list[Exception] = [
    OrderRejected("-2010 insufficient margin"),
    DuplicateClientOrderId("-4116"),
    UnknownOrder("-2011"),
    OrderNotFoundAtExchange("-2013"),
    ExchangeError("-1102 mandatory parameter"),
    InvalidOrder("price", "must be positive"),
    OrderNotFound("o1"),
    ValueError("a bug"),
]


@pytest.mark.parametrize("actor", RETRYING)
@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: type(e).__name__)
def test_a_transient_error_is_retried_until_the_actors_limit(actor: str, error: Exception) -> None:
    retry_when = HANDLERS[actor].retry_when
    assert retry_when(0, error)
    assert retry_when(RETRYING[actor] - 1, error)
    assert not retry_when(RETRYING[actor], error)


@pytest.mark.parametrize("actor", RETRYING)
@pytest.mark.parametrize("error", FINAL, ids=lambda e: type(e).__name__)
def test_a_definite_answer_or_a_bug_is_never_retried(actor: str, error: Exception) -> None:
    assert not HANDLERS[actor].retry_when(0, error)


def test_creates_are_never_retried_by_the_queue() -> None:
    assert HANDLERS[SUBMIT_ORDER] == Handler(HANDLERS[SUBMIT_ORDER].run)
    assert not HANDLERS[SUBMIT_ORDER].retry_when(0, StoreUnavailable("order store (Redis) unreachable"))


def test_backoff_per_actor() -> None:
    backoffs = {
        name: (h.min_backoff_ms, h.max_backoff_ms) for name, h in HANDLERS.items() if name in RETRYING
    }
    assert backoffs == {
        CANCEL_ORDER: (100, 2_000),
        CANCEL_ALL_ORDERS: (100, 2_000),
        AMEND_ORDER: (100, 2_000),
        RECONCILE_ORDER: (500, 5_000),
    }


class _BrandNewOutage(OrderServiceError):
    """An error class the policy has never heard of, that says it is transient."""

    transient = True


class _PermanentStoreRefusal(StoreUnavailable):
    """A store error whose class says retrying cannot help, though its family would."""

    transient = False


@pytest.mark.parametrize("actor", RETRYING)
def test_the_policy_follows_the_flag_not_a_list_of_classes(actor: str) -> None:
    retry_when = HANDLERS[actor].retry_when
    assert retry_when(0, _BrandNewOutage("new"))
    assert not retry_when(0, _PermanentStoreRefusal("refused for good"))
