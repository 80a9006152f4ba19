"""PlaceOrder's handler: validate, pass risk and admission, store and queue in one atomic step.

Reached through `gateway.handlers.Intake`, which has already bounded the command's strings
and charged the client's request rate. It publishes nothing itself: the order goes to the
outbox in the same write, and from there to the update streams and NATS.

With a `RiskGate`, an order also passes pre-trade risk: the limits in force and the
mark-price checks there, the kill switch and the counting limits in the store's create
step (atomic across replicas). Each refusal is counted by limit.
"""

from __future__ import annotations

import redis.exceptions

from gateway.admission import Admission
from gateway.auth import Caller
from gateway.commands import PlaceOrder
from gateway.order_builder import build_order
from gateway.risk import RiskGate
from gateway.rules_cache import RulesCache
from gateway.status_mapping import store_failure_message
from orders import metrics
from orders.errors import (
    ExchangeNotAccepting,
    NotReplicated,
    OrderAlreadyExists,
    Overloaded,
    RiskLimitExceeded,
    StoreUnavailable,
    SymbolRulesUnavailable,
)
from orders.model import Order
from orders.store import CreateResult, OrderStore
from runtime.settings import RiskSettings
from tasks.messages import submit_order_push


async def place_order(
    command: PlaceOrder,
    caller: Caller | None,
    *,
    store: OrderStore,
    rules: RulesCache,
    risk: RiskSettings,
    risk_gate: RiskGate | None,
    admission: Admission | None,
) -> CreateResult:
    """Store and queue the order `command` describes; idempotent on client_order_id.

    A repeated client_order_id returns the stored order only if it is the same caller's
    order with the same terms; otherwise OrderAlreadyExists names what differs (client ids
    are unique per exchange account, so another client's id cannot be reused either).
    Raises InvalidOrder, PermissionDenied (a symbol the caller may not trade), Overloaded or
    ExchangeNotAccepting (`gateway.admission`), SymbolRulesUnavailable before any worker
    loaded the rules, RiskLimitExceeded (counted in `order_execution_risk_refusals_total`),
    or StoreUnavailable naming the ids to retry with when the store failed mid-write.
    """
    try:
        return await _place(command, caller, store, rules, risk, risk_gate, admission)
    except RiskLimitExceeded as exc:
        metrics.RISK_REFUSALS.labels(metrics.bounded(exc.limit, metrics.RISK_LIMITS)).inc()
        raise


async def _place(
    command: PlaceOrder,
    caller: Caller | None,
    store: OrderStore,
    rules: RulesCache,
    risk: RiskSettings,
    risk_gate: RiskGate | None,
    admission: Admission | None,
) -> CreateResult:
    if caller is not None:
        caller.check_symbol(command.symbol)
    if command.symbol not in rules.current:
        await rules.reload_on_miss()
        if not rules.current:
            raise SymbolRulesUnavailable(
                "no exchange trading rules loaded yet; start a worker (it fetches exchangeInfo)"
            )
    current = rules.current
    order = build_order(command, current, risk_gate.limits if risk_gate else risk)
    if caller is not None:
        order = order.replace(owner=caller.name)
    try:
        checked = await risk_gate.check(order, current[order.symbol]) if risk_gate else None
        if admission is not None:
            await admission.check_create(order.symbol)
    except (RiskLimitExceeded, Overloaded, ExchangeNotAccepting):
        # A retry of an order already stored (its first answer was lost, say with the gateway
        # that took it) gets that order back, even if the market or the queues have moved since.
        stored = await store.find_by_client_id(order.client_order_id)
        if stored is None:
            raise
        _check_same_order(stored, order)
        await store.confirm_replicated()  # as replicated as a first answer (min_replica_acks)
        return CreateResult(stored, created=False)
    try:
        result = await store.create(order, enqueue=submit_order_push, risk=checked)
    except (StoreUnavailable, redis.exceptions.RedisError) as exc:
        answer = _maybe_stored(order, exc)
        if answer is None:
            raise
        raise answer from exc
    if not result.created:
        _check_same_order(result.order, order)
    return result


def _maybe_stored(order: Order, exc: Exception) -> StoreUnavailable | None:
    """What a store outage during the create answers: the write may have landed, and only the
    client id can tell, so the answer names it. None when `exc` is no outage (a bug), or names
    the ids already (NotReplicated: stored, not yet confirmed by the replicas).

    The outage is a redis error (the gateway's map says which) or a StoreUnavailable, said by
    the redis error it was raised from if there is one, else by its own message.
    """
    if isinstance(exc, NotReplicated):
        return None
    cause = exc.__cause__ if isinstance(exc, StoreUnavailable) and exc.__cause__ is not None else exc
    if isinstance(cause, redis.exceptions.TimeoutError):
        what: str | None = "order store (Redis) did not answer in time"
    else:
        what = store_failure_message(cause)
    if what is None and isinstance(exc, StoreUnavailable):
        what = str(exc)
    if what is None:
        return None
    return StoreUnavailable(
        f"{what.removesuffix('; retry shortly')}; order {order.order_id} may have been stored. "
        f"Retry with client_order_id {order.client_order_id!r} (idempotent) or GetOrder it"
    )


# What makes two requests "the same order" for an idempotent retry, in the order they are named.
_TERMS = (
    "symbol",
    "side",
    "type",
    "quantity",
    "price",
    "time_in_force",
    "reduce_only",
    "post_only",
    "user_id",
    "trigger_price",
    "working_type",
    "price_protect",
    "close_position",
    "callback_rate",
    "activation_price",
)


def _check_same_order(stored: Order, requested: Order) -> None:
    """Raise OrderAlreadyExists unless `requested` is a retry of `stored` by the same caller."""
    client_order_id = requested.client_order_id
    if stored.owner != requested.owner:
        raise OrderAlreadyExists(
            "client_order_id",
            f"{client_order_id!r} is already used on this exchange account by another client; "
            "client order ids are unique per account, choose another",
        )
    for term in _TERMS:
        if getattr(stored, term) != getattr(requested, term):
            raise OrderAlreadyExists(
                term,
                f"differs from the order already placed with client_order_id {client_order_id!r} "
                f"(order {stored.order_id}); a retry must repeat the order exactly, a new order needs "
                "a new client_order_id",
            )
