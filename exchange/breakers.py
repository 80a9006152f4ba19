"""Circuit breakers per endpoint group, their state in Redis so every replica shares it.

Three groups trip on their own: creating orders (`binance_create_order`), canceling
(`binance_cancel_order`) and querying (`binance_query_order`), so a broken order entry
does not stop cancels. Only exchange faults count — timeouts, connection errors, 5xx,
overload — never a business answer (-2019 margin, -5022 post-only, filter failures) nor a
rate-limit or clock answer, which say the exchange is working. The seed's settings:
`failure_threshold` consecutive faults open a breaker for `timeout` seconds; then
`max_requests` successful trial calls close it again.

pybreaker does the bookkeeping on its Redis storage, with two changes for the order
path: the shared state is read at most every `refresh_s` (0.25 s) rather than on every
call, and a success writes only when it resets a non-zero failure count. pybreaker's
storage is synchronous and would otherwise block the event loop with two Redis round
trips on every exchange request. A breaker another replica opens is therefore seen
here within `refresh_s`; a fault, which is rare, is still counted in Redis at once. On
the trip the original error is re-raised, not replaced: a timed-out POST must stay
"outcome unknown".
"""

from __future__ import annotations

import time
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


class _CachedRedisStorage(pybreaker.CircuitRedisStorage):
    """pybreaker's Redis storage, its state and failure count re-read at most every `refresh_s`."""

    def __init__(self, client: redis.Redis, namespace: str, refresh_s: float) -> None:
        super().__init__(pybreaker.STATE_CLOSED, client, namespace=namespace)
        self._client = client
        self._refresh_s = refresh_s
        self._read_at = float("-inf")
        self._state = pybreaker.STATE_CLOSED
        self._failures = 0

    def _refresh(self) -> None:
        if time.monotonic() - self._read_at < self._refresh_s:
            return
        try:
            state, failures = self._client.mget(self._namespace("state"), self._namespace("fail_counter"))
        except redis.RedisError:
            self.logger.exception("RedisError: keeping the last known breaker state")
            return
        if state is None:  # the keys were lost (Redis flushed): start closed again, as pybreaker does
            self._initialize_redis_state(pybreaker.STATE_CLOSED)
        self._state = _text(state) if state is not None else pybreaker.STATE_CLOSED
        self._failures = int(failures or 0)
        self._read_at = time.monotonic()

    @property
    def state(self) -> str:
        self._refresh()
        return self._state

    @state.setter
    def state(self, state: str) -> None:
        try:
            self._client.set(self._namespace("state"), str(state))
        except redis.RedisError:
            self.logger.exception("RedisError")
        self._state = str(state)

    def increment_counter(self) -> None:
        super().increment_counter()
        self._failures += 1

    def reset_counter(self) -> None:
        self._refresh()
        if self._failures:
            super().reset_counter()
            self._failures = 0


class Breakers:
    """One breaker per group; shared through `client` (a sync Redis client), or per process without it."""

    def __init__(
        self,
        settings: CircuitBreakerSettings,
        *,
        client: redis.Redis | None = None,
        namespace: str = "oe",
        refresh_s: float = 0.25,
    ) -> None:
        self._breakers: dict[Group, pybreaker.CircuitBreaker] = {}
        for group in Group:
            storage: pybreaker.CircuitBreakerStorage = (
                _CachedRedisStorage(client, f"{namespace}:breaker:{group}", refresh_s)
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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
