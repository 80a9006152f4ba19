"""Circuit breakers per endpoint group, their state in Redis so every replica shares it.

Three groups trip on their own: creating orders (`binance_create_order`), canceling
(`binance_cancel_order`) and querying (`binance_query_order`), so a broken order entry
does not stop cancels. Only exchange faults count — timeouts, connection errors, 5xx,
overload — never a business answer (-2019 margin, -5022 post-only, filter failures) nor a
rate-limit or clock answer, which say the exchange is working. The seed's settings:
`failure_threshold` consecutive faults open a breaker for `timeout` seconds; then
`max_requests` successful trial calls close it again.

pybreaker does the bookkeeping (`CircuitRedisStorage`); `calling()` is used rather than
`call()`, which serialises every thread of the process on one lock. On the trip the
original error is re-raised, not replaced: a timed-out POST must stay "outcome unknown".
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum

import pybreaker
import redis

from exchange.errors import CircuitOpen, ClockSkew, ExchangeUnavailable, OutcomeUnknown, RateLimited
from orders.settings import CircuitBreakerSettings


class Group(StrEnum):
    CREATE = "binance_create_order"
    CANCEL = "binance_cancel_order"
    QUERY = "binance_query_order"


def is_exchange_fault(exc: BaseException) -> bool:
    """Whether `exc` says the exchange is unwell (counts toward opening a breaker)."""
    if isinstance(exc, RateLimited | ClockSkew):
        return False
    return isinstance(exc, ExchangeUnavailable | OutcomeUnknown)


def breaker_key(namespace: str, group: Group, field: str = "state") -> str:
    """The Redis key pybreaker keeps `field` of `group`'s breaker under."""
    return f"{namespace}:breaker:{group}:{pybreaker.CircuitRedisStorage.BASE_NAMESPACE}:{field}"


class Breakers:
    """One breaker per group; shared through `client` (a sync Redis client), or per process without it."""

    def __init__(
        self, settings: CircuitBreakerSettings, *, client: redis.Redis | None = None, namespace: str = "oe"
    ) -> None:
        self._breakers: dict[Group, pybreaker.CircuitBreaker] = {}
        for group in Group:
            storage: pybreaker.CircuitBreakerStorage = (
                pybreaker.CircuitRedisStorage(
                    pybreaker.STATE_CLOSED, client, namespace=f"{namespace}:breaker:{group}"
                )
                if client is not None
                else pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
            )
            self._breakers[group] = pybreaker.CircuitBreaker(
                fail_max=settings.failure_threshold,
                reset_timeout=settings.timeout,
                success_threshold=settings.max_requests,
                exclude=[lambda exc: not is_exchange_fault(exc)],
                state_storage=storage,
                name=str(group),
                throw_new_error_on_trip=False,
            )

    def state(self, group: Group) -> str:
        """ "closed", "open" or "half-open"."""
        return str(self._breakers[group].current_state)

    @contextmanager
    def guard(self, group: Group) -> Iterator[None]:
        """Run the block through `group`'s breaker; raises CircuitOpen, without calling, while it is open."""
        try:
            with self._breakers[group].calling():
                yield
        except pybreaker.CircuitBreakerError as exc:
            raise CircuitOpen(f"circuit breaker {group} is open", group=str(group)) from exc
