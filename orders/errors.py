"""The service's exception tree.

Every error the service raises on purpose derives from `OrderServiceError`, so an entry
point can map the whole family at once (gRPC status codes in the gateway, retry policy
in the workers) and let anything else surface as a bug.

Each class says whether it is `transient`: whether the same request may succeed if made
again shortly (the store or the exchange could not take it now) or never will (the request
is wrong, the order is gone, the exchange refused it). The workers' retry policy reads that
flag (`is_transient`), so a new error class decides its retries where it is defined.
"""

from __future__ import annotations

from typing import ClassVar


class OrderServiceError(Exception):
    """Root of every error this service raises on purpose. Not transient unless a subclass says so."""

    transient: ClassVar[bool] = False


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` is one of ours that says trying again shortly may succeed (False for any other)."""
    return isinstance(exc, OrderServiceError) and exc.transient


class InvalidOrder(OrderServiceError):
    """A request broke a rule; nothing was stored or queued.

    `field` names the offending request field and `rule` says what it must satisfy,
    so the message reads "price: must be a multiple of tick size 0.10".
    """

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class RiskLimitExceeded(InvalidOrder):
    """A valid order that our own risk limits (or the trading mode) refuse; nothing was stored.

    `limit` names the limit for metrics and operators ("max_open_orders", "trading_mode",
    ...); the message names the field, the value and the allowance. The gateway answers
    FAILED_PRECONDITION: the request is well formed, the account's state refuses it.
    """

    def __init__(self, field: str, rule: str, *, limit: str) -> None:
        super().__init__(field, rule)
        self.limit = limit


class OrderNotFound(OrderServiceError):
    """No order with this id is stored."""

    def __init__(self, order_id: str) -> None:
        super().__init__(f"order {order_id!r} not found")
        self.order_id = order_id


class OrderNotCancelable(OrderServiceError):
    """The order is in a final state, so there is nothing to cancel."""


class OrderNotAmendable(OrderServiceError):
    """The order cannot be amended now: not a LIMIT order, or not resting at the exchange."""


class StoreConflict(OrderServiceError):
    """An optimistic update kept losing the race for the same order."""

    transient = True


class SymbolRulesUnavailable(OrderServiceError):
    """Exchange trading rules have not been loaded yet, so orders cannot be checked."""

    transient = True


class ResumePointExpired(OrderServiceError):
    """A stream resume point is older than the updates kept, so some may be gone."""


class StoreUnavailable(OrderServiceError):
    """The order store (Redis) cannot answer now: unreachable, or too busy to take another command.

    The message says why and, for a write, what may have happened and how to repeat it safely.
    The Redis adapters raise it (orders/store_outages.py) with redis-py's error as the cause.
    """

    transient = True


class StoreTimedOut(StoreUnavailable):
    """The order store (Redis) did not answer within `redis.socket_timeout_ms`: a write may have landed."""


class StoreFailingOver(StoreUnavailable):
    """The order store's primary is changing (the sentinels know none yet, or the server answered
    as a replica or as a primary cut off from its replicas)."""


class Overloaded(OrderServiceError):
    """Accepting this request now would overrun a limit (rate budget, queue bound, client rate).

    Nothing was stored; the message says which limit and how long to wait; `limit` names it
    for metrics ("rate_budget", "client_rate", "queue_bound"), and `account` the exchange
    account whose limit it is ("" for a client's or the gateway's own limits).
    """

    transient = True

    def __init__(self, message: str, *, limit: str, account: str = "") -> None:
        super().__init__(message)
        self.limit = limit
        self.account = account


class ExchangeNotAccepting(OrderServiceError):
    """The exchange cannot take orders now (a breaker is open, or it banned our IP)."""

    transient = True


class OrderAlreadyExists(OrderServiceError):
    """A client_order_id already names another order (of another client, or with different terms).

    Client order ids are unique per exchange account, so the id cannot be reused; `field`
    names what differs ("client_order_id" when it belongs to someone else).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotReplicated(StoreUnavailable):
    """A write is on the Redis primary, but fewer than `needed` replicas confirmed it in time.

    A failover now could take it back, so it is not acknowledged. The message says what was
    written, by how many replicas it was confirmed (`acks` of `needed` within `timeout_ms`)
    and how to repeat it safely (`retry`). `outcome` is what the write returned on the
    primary, for a caller that waits for the replicas itself (workers, the listener) rather
    than failing.
    """

    def __init__(
        self, what: str, retry: str, *, acks: int, needed: int, timeout_ms: int, outcome: object = None
    ) -> None:
        super().__init__(
            f"{what} stored on the primary but confirmed by {acks} of {needed} replicas within "
            f"{timeout_ms} ms; {retry}"
        )
        self.acks = acks
        self.needed = needed
        self.timeout_ms = timeout_ms
        self.outcome = outcome
