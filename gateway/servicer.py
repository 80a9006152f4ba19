"""OrderService over gRPC: identify the caller, call the desk, map results and errors to the wire.

Every method first identifies its caller from the call's API key (`gateway.auth`);
gRPC health and reflection are other services and stay open.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

from gateway import amend, bulk_orders, metrics
from gateway.auth import Authenticator, Caller
from gateway.bulk_orders import ItemResult
from gateway.desk import OrderDesk
from gateway.proto_mapping import STATE_FROM_PB, order_to_pb, update_to_pb
from gateway.status_mapping import Context, abort_with, answer, status_of
from gateway.updates import RESUME_TOKEN_METADATA, UpdateHub
from gateway.validation import check_stream_request
from orders.errors import InvalidOrder
from orders.model import Order
from orders.store import CreateResult
from orders.store_queries import OrderPage
from proto import order_pb2 as pb
from proto import order_pb2_grpc

log = logging.getLogger(__name__)


def _client(user_id: str, context: Context) -> str:
    """Who is asking, for the per-client rate: the user id, else the peer's address."""
    return user_id or context.peer().rsplit(":", 1)[0]


class OrderServicer(order_pb2_grpc.OrderServiceServicer):
    """The OrderService methods; `auth` None means authentication is off (tests)."""

    def __init__(self, desk: OrderDesk, hub: UpdateHub, auth: Authenticator | None = None) -> None:
        self._desk = desk
        self._hub = hub
        self._auth = auth

    async def _caller(self, context: Context) -> Caller | None:
        """The authenticated caller (None with auth off); raises Unauthenticated, answered late
        (`gateway.auth_failures`)."""
        if self._auth is None:
            return None
        return await self._auth.authenticate(context.invocation_metadata(), peer=context.peer())

    async def CreateOrder(self, request: pb.CreateOrderRequest, context: Context) -> pb.CreateOrderResponse:
        started = time.perf_counter()

        async def create() -> CreateResult:
            caller = await self._caller(context)
            return await self._desk.create(request, _client(request.user_id, context), caller)

        try:
            result = await answer(context, create)
        except Exception:
            metrics.ORDERS_REJECTED.inc()
            raise
        if result.created:
            metrics.ORDERS_CREATED.inc()
        metrics.ORDER_LATENCY.observe(time.perf_counter() - started)
        order = result.order
        return pb.CreateOrderResponse(
            order_id=order.order_id,
            client_order_id=order.client_order_id,
            state=order_to_pb(order).state,
            timestamp=order.created_at,
            duplicate=not result.created,
            order=order_to_pb(order),
        )

    async def CancelOrder(self, request: pb.CancelOrderRequest, context: Context) -> pb.CancelOrderResponse:
        async def cancel() -> Order:
            caller = await self._caller(context)
            return await self._desk.cancel(request.order_id, request.symbol, _client("", context), caller)

        order = await answer(context, cancel)
        metrics.ORDERS_CANCELED.inc()
        message = order_to_pb(order)
        return pb.CancelOrderResponse(
            order_id=order.order_id, state=message.state, timestamp=order.updated_at, order=message
        )

    async def GetOrder(self, request: pb.GetOrderRequest, context: Context) -> pb.GetOrderResponse:
        async def get() -> Order:
            caller = await self._caller(context)
            return await self._desk.read_order(request.order_id, _client("", context), caller)

        order = await answer(context, get)
        return pb.GetOrderResponse(order=order_to_pb(order))

    async def ListOrders(self, request: pb.ListOrdersRequest, context: Context) -> pb.ListOrdersResponse:
        async def list_orders() -> OrderPage:
            caller = await self._caller(context)
            if request.state != pb.STATE_UNSPECIFIED and request.state not in STATE_FROM_PB:
                raise InvalidOrder("state", f"unknown value {request.state}")
            states = [STATE_FROM_PB[request.state]] if request.state in STATE_FROM_PB else []
            return await self._desk.list_orders(
                symbol=request.symbol,
                states=states,
                start_ms=request.start_time,
                end_ms=request.end_time,
                limit=request.limit,
                page_token=request.page_token,
                client=_client("", context),
                caller=caller,
            )

        page = await answer(context, list_orders)
        return pb.ListOrdersResponse(
            orders=[order_to_pb(o) for o in page.orders], next_page_token=page.next_page_token
        )

    async def CreateOrders(
        self, request: pb.CreateOrdersRequest, context: Context
    ) -> pb.CreateOrdersResponse:
        async def create_all() -> list[ItemResult]:
            caller = await self._caller(context)
            return await bulk_orders.create_many(self._desk, request.orders, _client("", context), caller)

        results = await answer(context, create_all)
        return pb.CreateOrdersResponse(results=[_item_to_pb(item) for item in results])

    async def CancelAllOrders(
        self, request: pb.CancelAllOrdersRequest, context: Context
    ) -> pb.CancelAllOrdersResponse:
        async def cancel_all() -> list[Order]:
            caller = await self._caller(context)
            return await bulk_orders.cancel_all(self._desk, request.symbol, _client("", context), caller)

        orders = await answer(context, cancel_all)
        metrics.ORDERS_CANCELED.inc(len(orders))
        return pb.CancelAllOrdersResponse(orders=[order_to_pb(o) for o in orders])

    async def AmendOrder(self, request: pb.AmendOrderRequest, context: Context) -> pb.AmendOrderResponse:
        async def amend_order() -> Order:
            caller = await self._caller(context)
            return await amend.amend(
                self._desk, request.order_id, request.price, request.quantity, _client("", context), caller
            )

        return pb.AmendOrderResponse(order=order_to_pb(await answer(context, amend_order)))

    async def StreamOrderUpdates(
        self, request: pb.StreamOrderUpdatesRequest, context: Context
    ) -> AsyncIterator[pb.OrderUpdate]:
        """The caller's order updates, live, after a replay from `resume_token` if given.

        Refused with RESOURCE_EXHAUSTED when the caller (the API client with auth on, else
        the peer's address: a caller-chosen user_id would not bound anyone) or the gateway
        holds its cap of open streams (server.max_streams_per_client, server.max_streams).
        """

        async def start() -> tuple[Caller | None, str]:
            caller = await self._caller(context)
            check_stream_request(request.symbols, request.user_id, request.resume_token)
            self._desk.admit(caller, _client("", context), read=True)
            return caller, self._hub.resume_point(request.resume_token)

        caller, after = await answer(context, start)
        owner = caller.name if caller is not None else None
        client = owner if owner is not None else _client("", context)
        metrics.UPDATE_STREAMS.inc()
        try:
            async with self._hub.subscribe(
                request.symbols, user_id=request.user_id, after=after, owner=owner, client=client
            ) as updates:
                async for entry in updates:
                    yield update_to_pb(
                        entry.order,
                        update_type=entry.update_type,
                        fills=entry.fills,
                        resume_token=entry.entry_id,
                    )
            # The gateway is shutting down: end with OK, and say where to resume elsewhere.
            context.set_trailing_metadata(((RESUME_TOKEN_METADATA, updates.resume_token),))
        except Exception as exc:  # a slow reader, a cap, a store failure: all leave through one map
            await abort_with(context, exc)
        finally:
            metrics.UPDATE_STREAMS.dec()


def _item_to_pb(item: ItemResult) -> pb.CreateOrderResult:
    """One batch item on the wire: its CreateOrder answer, or its error's status name and message."""
    if item.error is not None:
        return pb.CreateOrderResult(error_code=status_of(item.error).name, error_message=str(item.error))
    assert item.created is not None
    order = item.created.order
    message = order_to_pb(order)
    return pb.CreateOrderResult(
        response=pb.CreateOrderResponse(
            order_id=order.order_id,
            client_order_id=order.client_order_id,
            state=message.state,
            timestamp=order.created_at,
            duplicate=not item.created.created,
            order=message,
        )
    )
