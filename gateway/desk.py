"""The gateway's order desk: what CreateOrder, CancelOrder, GetOrder and ListOrders do.

The desk knows nothing of gRPC's transport; the servicer maps requests and errors
around it. It publishes nothing itself: each change it stores goes to the outbox in
the same write, and from there to the update streams and NATS.

With a `RiskGate`, an order also passes pre-trade risk: the limits in force and the
mark-price checks there, the kill switch and the counting limits in the store's create
step (atomic across replicas). Each refusal is counted by limit.

Every call is charged to its client's request rate first (`admit`; reads at
`admission.read_cost`), and a read scans a bounded number of orders per call
(`list_scan_cap`, continued by page token).

With authentication on, every call comes with its `Caller`: an order records the
caller that placed it as its `owner`, and a caller reads, lists and cancels only its
own orders; another's answers NOT_FOUND, exactly like an id never used, so ids cannot
be probed. With auth off (`caller=None`) nothing is scoped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import redis.exceptions

from gateway.admission import Admission
from gateway.auth import Caller
from gateway.risk import RiskGate
from gateway.rules_cache import RulesCache
from gateway.status_mapping import store_failure_message
from gateway.validation import (
    MAX_ORDER_ID_CHARS,
    MAX_PAGE_TOKEN_CHARS,
    build_order,
    check_create_text,
    check_length,
    check_symbol_text,
)
from orders import fsm, metrics
from orders.errors import (
    ExchangeNotAccepting,
    InvalidOrder,
    OrderAlreadyExists,
    OrderNotCancelable,
    OrderNotFound,
    Overloaded,
    RiskLimitExceeded,
    StoreUnavailable,
    SymbolRulesUnavailable,
)
from orders.model import Order, OrderState
from orders.store import CreateResult, OrderStore
from orders.store_queries import DEFAULT_SCAN_CAP, OrderPage
from proto import order_pb2 as pb
from runtime.settings import RiskSettings
from service_layer.kill_switch import cancel_enqueue, cancel_open_orders, request_cancel
from tasks.messages import cancel_order_push, submit_order_push

log = logging.getLogger(__name__)

MAX_PAGE = 500


@dataclass
class OrderDesk:
    store: OrderStore
    rules: RulesCache
    risk: RiskSettings
    admission: Admission | None = None
    risk_gate: RiskGate | None = None
    list_scan_cap: int = DEFAULT_SCAN_CAP  # server.list_scan_cap

    def admit(self, caller: Caller | None, client: str, *, read: bool = False) -> None:
        """Charge a call to its client's request rate (`gateway.admission`): the API client's
        own with auth on, else `client`'s (user_id or peer address); a `read` costs
        `admission.read_cost` of a request. Raises Overloaded; without admission, nothing."""
        if self.admission is None:
            return
        if caller is not None:
            self.admission.check_client(
                caller.name, rate=caller.requests_per_second, burst=caller.burst, read=read
            )
        else:
            self.admission.check_client(client or "anonymous", read=read)

    async def create(
        self, req: pb.CreateOrderRequest, client: str = "", caller: Caller | None = None
    ) -> CreateResult:
        """Validate, admit, store and queue an order in one atomic step; idempotent on client_order_id.

        A repeated client_order_id returns the stored order only if it is the same
        caller's order with the same terms; otherwise OrderAlreadyExists names what
        differs (client ids are unique per exchange account, so another client's id
        cannot be reused either). Raises InvalidOrder, PermissionDenied (a symbol the
        caller may not trade), Overloaded or ExchangeNotAccepting (see
        `gateway.admission`), SymbolRulesUnavailable before any worker loaded the rules, or
        RiskLimitExceeded (counted in `order_execution_risk_refusals_total`).
        """
        try:
            return await self._create(req, client, caller)
        except RiskLimitExceeded as exc:
            metrics.RISK_REFUSALS.labels(metrics.bounded(exc.limit, metrics.RISK_LIMITS)).inc()
            raise

    async def _create(self, req: pb.CreateOrderRequest, client: str, caller: Caller | None) -> CreateResult:
        check_create_text(req)
        self.admit(caller, client or req.user_id)
        if caller is not None:
            caller.check_symbol(req.symbol)
        if req.symbol not in self.rules.current:
            await self.rules.reload_on_miss()
            if not self.rules.current:
                raise SymbolRulesUnavailable(
                    "no exchange trading rules loaded yet; start a worker (it fetches exchangeInfo)"
                )
        rules = self.rules.current
        order = build_order(req, rules, self.risk_gate.limits if self.risk_gate else self.risk)
        if caller is not None:
            order = order.replace(owner=caller.name)
        try:
            risk = await self.risk_gate.check(order, rules[order.symbol]) if self.risk_gate else None
            if self.admission is not None:
                await self.admission.check_create(order.symbol)
        except (RiskLimitExceeded, Overloaded, ExchangeNotAccepting):
            # A retry of an order already stored (its first answer was lost, say with the gateway
            # that took it) gets that order back, even if the market or the queues have moved since.
            stored = await self.store.find_by_client_id(order.client_order_id)
            if stored is None:
                raise
            _check_same_order(stored, order)
            await self.store.confirm_replicated()  # as replicated as a first answer (min_replica_acks)
            return CreateResult(stored, created=False)
        try:
            result = await self.store.create(order, enqueue=submit_order_push, risk=risk)
        except redis.exceptions.TimeoutError as exc:
            # The write may have landed: only the client id can tell, so say which one.
            raise StoreUnavailable(
                f"order store (Redis) did not answer in time; order {order.order_id} may have been stored. "
                f"Retry with client_order_id {order.client_order_id!r} (idempotent) or GetOrder it"
            ) from exc
        except redis.exceptions.RedisError as exc:
            failure = store_failure_message(exc)  # unreachable, failing over: the same answer
            if failure is None:
                raise
            raise StoreUnavailable(
                f"{failure.removesuffix('; retry shortly')}; order {order.order_id} may have been stored. "
                f"Retry with client_order_id {order.client_order_id!r} (idempotent) or GetOrder it"
            ) from exc
        if not result.created:
            _check_same_order(result.order, order)
        return result

    async def cancel(
        self, order_id: str, symbol: str = "", client: str = "", caller: Caller | None = None
    ) -> Order:
        """Cancel an order: locally if it is still NEW, else at the exchange through a worker.

        Returns the order as it is now (CANCELED, or PENDING_CANCEL while the exchange
        answers). Raises OrderNotFound (also for another caller's order), InvalidOrder
        (symbol mismatch) or OrderNotCancelable (already final), or Overloaded (the
        client's request rate).
        """
        _require_id(order_id)
        if symbol:
            check_symbol_text("symbol", symbol)
        self.admit(caller, client)
        order = await self.get(order_id, caller)
        if symbol and symbol != order.symbol:
            raise InvalidOrder("symbol", f"does not match the order's symbol {order.symbol}")

        result = await self.store.transition(order_id, request_cancel, enqueue=_cancel_message)
        if not result.changed and result.order.state in fsm.FINAL_STATES:
            raise OrderNotCancelable(f"order {order_id} is {result.order.state}; nothing to cancel")
        return result.order

    async def cancel_open(self) -> int:
        """Cancel every open order of every client, through the same path as `cancel`.

        For the kill switch (HALTED with cancel-open; see `service_layer.kill_switch`): orders still
        NEW are canceled locally, the others get a cancel queued for the exchange. Returns how
        many orders changed; one that ended meanwhile is skipped.
        """
        return await cancel_open_orders(self.store, cancel_order_push)

    async def read_order(self, order_id: str, client: str = "", caller: Caller | None = None) -> Order:
        """GetOrder: `get`, charged as a read to the client's request rate (raises Overloaded)."""
        _require_id(order_id)
        self.admit(caller, client, read=True)
        return await self.get(order_id, caller)

    async def get(self, order_id: str, caller: Caller | None = None) -> Order:
        """The stored order; raises OrderNotFound if there is none or it is another caller's."""
        _require_id(order_id)
        order = await self.store.get(order_id)
        if caller is not None and order.owner != caller.name:
            raise OrderNotFound(order_id)
        return order

    async def list_orders(
        self,
        *,
        symbol: str,
        states: Sequence[OrderState],
        start_ms: int,
        end_ms: int,
        limit: int,
        page_token: str,
        client: str = "",
        caller: Caller | None = None,
    ) -> OrderPage:
        """Orders newest first (the caller's own only), filtered; see `OrderStore.search`.

        Charged as a read to the client's request rate (raises Overloaded) once the request is
        valid; reads at most `list_scan_cap` orders, so a rare filter may answer a short or
        empty page with a `next_page_token` (only an empty token means the end).
        """
        if symbol:
            check_symbol_text("symbol", symbol)
        check_length("page_token", page_token, MAX_PAGE_TOKEN_CHARS)
        if limit < 0 or limit > MAX_PAGE:
            raise InvalidOrder("limit", f"must be between 1 and {MAX_PAGE} (0 means 100)")
        if start_ms < 0 or end_ms < 0 or (end_ms and start_ms and end_ms <= start_ms):
            raise InvalidOrder("end_time", "must be after start_time (Unix ms; 0 = no bound)")
        self.admit(caller, client, read=True)
        return await self.store.search(
            symbol=symbol,
            states=states,
            start_ms=start_ms,
            end_ms=end_ms,
            limit=limit or 100,
            page_token=page_token,
            owner=caller.name if caller is not None else None,
            scan_cap=self.list_scan_cap,
        )


_cancel_message = cancel_enqueue(cancel_order_push)


def _require_id(order_id: str) -> None:
    if not order_id:
        raise InvalidOrder("order_id", "is required")
    check_length("order_id", order_id, MAX_ORDER_ID_CHARS)


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
