"""What each order message runs, and when a failure is retried: the workers' retry policy.

Each actor name (tasks.queues) maps to the executor method that does the work and to its
retry rule, which workers.consumer applies as Dramatiq's retry_when and backoff. The policy
lives here, once, and asks the error itself whether it is worth another try (its class's
`transient` flag, orders.errors): creates are never retried by the queue (the executor
retries what is safe to retry inside the order's age budget, and a redelivery after a crash
is made safe by its claim); cancels and reconciliations retry transient errors with a short
backoff, up to a limit. What still fails ends in the dead-letter queue with its order
unsettled, and the listener's reconciler, which sweeps every unsettled order, settles it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from order_execution.orders.errors import is_transient
from order_execution.orders.model import DEFAULT_ACCOUNT
from order_execution.tasks.queues import (
    AMEND_ORDER,
    CANCEL_ALL_ORDERS,
    CANCEL_ORDER,
    RECONCILE_ORDER,
    SUBMIT_ORDER,
)
from order_execution.workers.consumer import Handler
from order_execution.workers.execution import OrderExecutor

MAX_CANCEL_RETRIES = 20
MAX_RECONCILE_RETRIES = 5


def retry_transient(max_retries: int) -> Callable[[int, Exception], bool]:
    """A `retry_when`: retry an error that says it is transient, while fewer than `max_retries`
    retries were made."""

    def retry_when(retries: int, exc: Exception) -> bool:
        return is_transient(exc) and retries < max_retries

    return retry_when


class UnknownAccount(LookupError):
    """A message names an exchange account this worker has no client for (its settings lack it).

    Not transient: the message is dead-lettered, its order left to the reconciler of a
    listener that trades the account."""


def order_handlers(executors: Mapping[str, OrderExecutor]) -> dict[str, Handler]:
    """The handlers by actor name, each running the executor of the message's `account`
    (absent: `default`). Messages carry `order_id`, reconciles also `attempt`, amends `price`
    and `quantity`; cancel-all carries `symbol` instead of `order_id`."""
    retry_cancel = retry_transient(MAX_CANCEL_RETRIES)
    retry_reconcile = retry_transient(MAX_RECONCILE_RETRIES)

    def on_account(method: str) -> Callable[..., Awaitable[None]]:
        async def dispatch(*, account: str = DEFAULT_ACCOUNT, **kwargs: Any) -> None:
            executor = executors.get(account)
            if executor is None:
                raise UnknownAccount(f"no exchange account {account!r} in this worker's settings")
            await getattr(executor, method)(**kwargs)

        return dispatch

    return {
        SUBMIT_ORDER: Handler(on_account("submit")),
        CANCEL_ORDER: Handler(on_account("cancel"), retry_cancel, min_backoff_ms=100, max_backoff_ms=2_000),
        CANCEL_ALL_ORDERS: Handler(
            on_account("cancel_all"), retry_cancel, min_backoff_ms=100, max_backoff_ms=2_000
        ),
        AMEND_ORDER: Handler(on_account("amend"), retry_reconcile, min_backoff_ms=100, max_backoff_ms=2_000),
        RECONCILE_ORDER: Handler(
            on_account("reconcile"), retry_reconcile, min_backoff_ms=500, max_backoff_ms=5_000
        ),
    }
