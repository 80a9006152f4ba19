"""Redis failures, turned once into the service's own `StoreUnavailable` family.

As httpx maps httpcore's exceptions at one seam, every Redis adapter (the order store and
its reads, the outbox, replica probes, risk state, trading rules, listener status, the
queue client, the listener's lease) is a `@store_adapter` class: its public coroutines run
inside `store_outages()`, so a failure that means "Redis cannot answer now" leaves as

* `StoreTimedOut`: no answer within `redis.socket_timeout_ms` (a write may have landed);
* `StoreFailingOver`: with Sentinel (runtime/redis_connection.py), the sentinels know no
  primary yet, or the server answered as a replica (READONLY) or as a primary cut off from
  its replicas (NOREPLICAS);
* `StoreUnavailable`: unreachable, or this process's connection pool is full;

with redis-py's error as its `__cause__`. Callers above the adapters (workers, listener,
gateway) catch these and never name redis-py's classes. Any other Redis error (a wrong type,
a bad script) is a bug and passes unchanged. The message is what a gRPC client reads in
UNAVAILABLE, so it says what happened and, for a write, how to repeat it safely.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from typing import NoReturn, ParamSpec, TypeVar

import redis.asyncio.sentinel
import redis.exceptions
import redis.sentinel

from order_execution.orders.errors import StoreFailingOver, StoreTimedOut, StoreUnavailable
from order_execution.runtime.redis_connection import PrimaryChanged, is_cut_off_primary

P = ParamSpec("P")
R = TypeVar("R")
Y = TypeVar("Y")
C = TypeVar("C", bound=type)

_RETRY = "; retry shortly"
_FAILING_OVER = "order store (Redis) is failing over"
_NO_PRIMARY = f"{_FAILING_OVER}: the sentinels (redis.sentinels) know no primary now{_RETRY}"
_CUT_OFF = f"{_FAILING_OVER}: its primary is cut off from its replicas (NOREPLICAS){_RETRY}"

# The most specific first: MaxConnectionsError, MasterNotFoundError and PrimaryChanged are
# ConnectionErrors. A timeout is also what an overloaded process sees: its event loop reads
# the answer too late.
_OUTAGES: tuple[tuple[type[Exception], type[StoreUnavailable], str], ...] = (
    (
        redis.exceptions.TimeoutError,
        StoreTimedOut,
        "order store (Redis) did not answer within redis.socket_timeout_ms: Redis, or the process "
        f"waiting on it, is overloaded{_RETRY}",
    ),
    (
        redis.exceptions.MaxConnectionsError,
        StoreUnavailable,
        "redis.max_connections commands are already waiting on the order store (Redis) in this "
        f"process: overloaded{_RETRY}",
    ),
    (redis.asyncio.sentinel.MasterNotFoundError, StoreFailingOver, _NO_PRIMARY),
    (redis.sentinel.MasterNotFoundError, StoreFailingOver, _NO_PRIMARY),
    (PrimaryChanged, StoreFailingOver, _CUT_OFF),
    (
        redis.exceptions.ReadOnlyError,
        StoreFailingOver,
        f"{_FAILING_OVER}: the server answered as a read-only replica{_RETRY}",
    ),
    (redis.exceptions.ConnectionError, StoreUnavailable, f"order store (Redis) unreachable{_RETRY}"),
)


def outage_of(exc: BaseException, *, consequence: str = "") -> StoreUnavailable | None:
    """The StoreUnavailable `exc` (a redis-py error) stands for, or None if it is not an outage.

    `consequence` (what the failed call may have done and how to repeat it) replaces the
    message's "retry shortly".
    """
    for redis_kind, kind, text in _OUTAGES:
        if isinstance(exc, redis_kind):
            return kind(_said(text, consequence))
    if isinstance(exc, redis.exceptions.ResponseError) and is_cut_off_primary(exc):
        return StoreFailingOver(_said(_CUT_OFF, consequence))
    return None


def _said(text: str, consequence: str) -> str:
    return f"{text.removesuffix(_RETRY)}; {consequence}" if consequence else text


@contextlib.contextmanager
def store_outages(*, consequence: str = "") -> Iterator[None]:
    """Raise what a Redis outage inside the block stands for (see `outage_of`), from it;
    anything else passes unchanged."""
    try:
        yield
    except redis.exceptions.RedisError as exc:
        _raise_as_outage(exc, consequence)


def _raise_as_outage(exc: redis.exceptions.RedisError, consequence: str = "") -> NoReturn:
    """Raise the outage `exc` stands for, from it; `exc` itself if it is none (a bug)."""
    outage = outage_of(exc, consequence=consequence)
    if outage is None:
        raise exc
    raise outage from exc


def store_adapter(cls: C) -> C:
    """Class decorator: run every public coroutine and async generator defined on `cls` inside
    `store_outages()`. Inherited methods are mapped by their own class's decorator."""
    for name, member in list(vars(cls).items()):
        if name.startswith("_"):
            continue
        if inspect.isasyncgenfunction(member):
            setattr(cls, name, _mapped_generator(member))
        elif inspect.iscoroutinefunction(member):
            setattr(cls, name, _mapped_coroutine(member))
    return cls


def _mapped_coroutine(call: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    # A plain try rather than `with store_outages()`: this runs on every store call of every
    # order, and a generator-based context manager costs microseconds where a try costs nothing.
    @functools.wraps(call)
    async def mapped(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await call(*args, **kwargs)
        except redis.exceptions.RedisError as exc:
            _raise_as_outage(exc)

    return mapped


def _mapped_generator(
    generate: Callable[P, AsyncGenerator[Y, None]],
) -> Callable[P, AsyncGenerator[Y, None]]:
    @functools.wraps(generate)
    async def mapped(*args: P.args, **kwargs: P.kwargs) -> AsyncGenerator[Y, None]:
        with store_outages():
            async with contextlib.aclosing(generate(*args, **kwargs)) as items:
                async for item in items:
                    yield item

    return mapped
