"""The gateway's order desk: what CreateOrder, CancelOrder, GetOrder and ListOrders do.

The desk knows nothing of gRPC's transport; the servicer maps requests and errors
around it. It publishes nothing itself: each change it stores goes to the outbox in
the same write, and from there to the update streams and NATS.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import redis.exceptions

from gateway.admission import Admission
from gateway.rules_cache import RulesCache
from gateway.validation import build_order
from orders import fsm
from orders.errors import InvalidOrder, OrderNotCancelable, StoreUnavailable, SymbolRulesUnavailable
from orders.model import Order, OrderState
from orders.settings import RiskSettings
from orders.store import CreateResult, OrderPage, OrderStore, QueuePush
from proto import order_pb2 as pb
from tasks.messages import cancel_order_push, submit_order_push

log = logging.getLogger(__name__)

S = OrderState
MAX_PAGE = 500


@dataclass
class OrderDesk:
    store: OrderStore
    rules: RulesCache
    risk: RiskSettings
    admission: Admission | None = None

    async def create(self, req: pb.CreateOrderRequest, client: str = "") -> CreateResult:
        """Validate, admit, store and queue an order in one atomic step; idempotent on client_order_id.

        Raises InvalidOrder, Overloaded or ExchangeNotAccepting (see `gateway.admission`),
        or SymbolRulesUnavailable before any worker has loaded the rules.
        """
        if req.symbol not in self.rules.current:
            await self.rules.reload_on_miss()
            if not self.rules.current:
                raise SymbolRulesUnavailable(
                    "no exchange trading rules loaded yet; start a worker (it fetches exchangeInfo)"
                )
        if self.admission is not None:
            self.admission.check_client(client or req.user_id or "anonymous")
        order = build_order(req, self.rules.current, self.risk)
        if self.admission is not None:
            await self.admission.check_create(order.symbol)
        try:
            return await self.store.create(order, enqueue=submit_order_push)
        except redis.exceptions.TimeoutError as exc:
            # The write may have landed: only the client id can tell, so say which one.
            raise StoreUnavailable(
                f"order store (Redis) did not answer in time; order {order.order_id} may have been stored. "
                f"Retry with client_order_id {order.client_order_id!r} (idempotent) or GetOrder it"
            ) from exc

    async def cancel(self, order_id: str, symbol: str = "", client: str = "") -> Order:
        """Cancel an order: locally if it is still NEW, else at the exchange through a worker.

        Returns the order as it is now (CANCELED, or PENDING_CANCEL while the exchange
        answers). Raises OrderNotFound, InvalidOrder (symbol mismatch) or
        OrderNotCancelable (already final), or Overloaded (the client's request rate).
        """
        _require_id(order_id)
        if self.admission is not None:
            self.admission.check_client(client or "anonymous")
        order = await self.store.get(order_id)
        if symbol and symbol != order.symbol:
            raise InvalidOrder("symbol", f"does not match the order's symbol {order.symbol}")

        def cancel_now(current: Order) -> Order | None:
            if current.state is S.NEW:
                return fsm.transition(current, S.CANCELED, reason="canceled before it was sent")
            return fsm.transition(current, S.PENDING_CANCEL)

        def cancel_message(updated: Order) -> QueuePush | None:
            return cancel_order_push(updated) if updated.state is S.PENDING_CANCEL else None

        result = await self.store.transition(order_id, cancel_now, enqueue=cancel_message)
        if not result.changed and result.order.state in fsm.FINAL_STATES:
            raise OrderNotCancelable(f"order {order_id} is {result.order.state}; nothing to cancel")
        return result.order

    async def get(self, order_id: str) -> Order:
        _require_id(order_id)
        return await self.store.get(order_id)

    async def list_orders(
        self,
        *,
        symbol: str,
        states: Sequence[OrderState],
        start_ms: int,
        end_ms: int,
        limit: int,
        page_token: str,
    ) -> OrderPage:
        if limit < 0 or limit > MAX_PAGE:
            raise InvalidOrder("limit", f"must be between 1 and {MAX_PAGE} (0 means 100)")
        if start_ms < 0 or end_ms < 0 or (end_ms and start_ms and end_ms <= start_ms):
            raise InvalidOrder("end_time", "must be after start_time (Unix ms; 0 = no bound)")
        return await self.store.search(
            symbol=symbol,
            states=states,
            start_ms=start_ms,
            end_ms=end_ms,
            limit=limit or 100,
            page_token=page_token,
        )


def _require_id(order_id: str) -> None:
    if not order_id:
        raise InvalidOrder("order_id", "is required")
