"""The Dramatiq actors: thin shells that hand the order id to the executor.

Retry policy lives here, once: creates are not redelivered by Dramatiq (the executor
retries what is safe to retry inside the order's age budget, and a redelivery after a
crash is made safe by its claim); cancels and reconciliations retry with a short
backoff. What still fails ends in the dead-letter queue with its order unsettled, and
the listener's reconciler, which sweeps every unsettled order, settles it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dramatiq

from tasks.queues import ACTOR_QUEUE, CANCEL_ORDER, RECONCILE_ORDER, SUBMIT_ORDER
from workers.execution import TRANSIENT_ERRORS, CancelNotSettled, OrderExecutor

MAX_CANCEL_RETRIES = 20
MAX_RECONCILE_RETRIES = 5


def register_actors(broker: dramatiq.Broker, executor: Callable[[], OrderExecutor]) -> None:
    """Declare the order actors on `broker`; `executor` returns this process's executor."""

    async def submit_order(order_id: str) -> None:
        await executor().submit(order_id)

    async def cancel_order(order_id: str) -> None:
        await executor().cancel(order_id)

    async def reconcile_order(order_id: str, attempt: int = 0) -> None:
        await executor().reconcile(order_id, attempt)

    def retry_cancel(retries: int, exc: Exception) -> bool:
        return isinstance(exc, (CancelNotSettled, *TRANSIENT_ERRORS)) and retries < MAX_CANCEL_RETRIES

    def retry_reconcile(retries: int, exc: Exception) -> bool:
        return isinstance(exc, TRANSIENT_ERRORS) and retries < MAX_RECONCILE_RETRIES

    def declare(name: str, **options: Any) -> Any:
        return dramatiq.actor(actor_name=name, broker=broker, queue_name=ACTOR_QUEUE, **options)

    declare(SUBMIT_ORDER, max_retries=0)(submit_order)
    declare(CANCEL_ORDER, retry_when=retry_cancel, min_backoff=100, max_backoff=2000)(cancel_order)
    declare(RECONCILE_ORDER, retry_when=retry_reconcile, min_backoff=500, max_backoff=5000)(reconcile_order)
