"""PlaceOrder's handler: validate, pass risk and admission, store and queue in one atomic step.

Reached through `gateway.handlers.Intake`, which has already bounded the command's strings
and charged the client's request rate. It publishes nothing itself: the order goes to the
outbox in the same write, and from there to the update streams and NATS.

With a `RiskGate`, an order also passes pre-trade risk: the limits in force and the
mark-price checks there, the kill switch and the counting limits in the store's create
step (atomic across replicas). Each refusal is counted by limit.
"""

from __future__ import annotations

from order_execution.gateway.admission import Admission
from order_execution.gateway.auth import Caller
from order_execution.gateway.commands import PlaceOrder
from order_execution.gateway.order_builder import build_order
from order_execution.gateway.risk import RiskGate
from order_execution.gateway.rules_cache import RulesCache
from order_execution.orders import metrics
from order_execution.orders.errors import (
    ExchangeNotAccepting,
    OrderAlreadyExists,
    Overloaded,
    RiskLimitExceeded,
    SymbolRulesUnavailable,
)
from order_execution.orders.model import Order
from order_execution.orders.store import CreateResult, OrderStore
from order_execution.runtime.settings import RiskSettings
from order_execution.tasks.messages import submit_order_push


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
    """Store and queue the order `command` describes on the command's exchange account (the
    intake resolved it); idempotent on client_order_id within that account.

    A repeated client_order_id on the same account returns the stored order only if it is
    the same caller's order with the same terms; otherwise OrderAlreadyExists names what
    differs (client ids are unique per exchange account, so another client's id cannot be
    reused either). The same client_order_id on another account is another order.
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
    if not command.account:  # the intake resolves it; an order must never be stored without one
        raise ValueError("PlaceOrder reached its handler without a resolved account")
    if caller is not None:
        caller.check_symbol(command.symbol)
    if command.symbol not in rules.current:
        await rules.reload_on_miss()
        if not rules.current:
            raise SymbolRulesUnavailable(
                "no exchange trading rules loaded yet; start a worker (it fetches exchangeInfo)"
            )
    current = rules.current
    order = build_order(command, current, risk_gate.limits_for(command.account) if risk_gate else risk)
    order = order.replace(account=command.account, owner=caller.name if caller is not None else "")
    try:
        checked = await risk_gate.check(order, current[order.symbol]) if risk_gate else None
        if admission is not None:
            await admission.check_create(order.symbol, order.account)
    except (RiskLimitExceeded, Overloaded, ExchangeNotAccepting):
        # A retry of an order already stored (its first answer was lost, say with the gateway
        # that took it) gets that order back, even if the market or the queues have moved since.
        stored = await store.find_by_client_id(order.client_order_id, order.account)
        if stored is None:
            raise
        _check_same_order(stored, order)
        await store.confirm_replicated()  # as replicated as a first answer (min_replica_acks)
        return CreateResult(stored, created=False)
    # A store outage here raises StoreUnavailable naming the client_order_id to retry with
    # (OrderStore.create): the write may have landed.
    try:
        result = await store.create(order, enqueue=submit_order_push, risk=checked)
    finally:
        if admission is not None:  # admission counts the order as its own until then
            admission.create_done(order.symbol, order.account)
    if not result.created:
        _check_same_order(result.order, order)
    return result


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
