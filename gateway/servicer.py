"""OrderService over gRPC: identify the caller, parse the request into a command, hand it to the
intake (`gateway.handlers`), map the result to the wire; errors leave through the one status map
(`gateway.status_mapping.answer`).

Every method first identifies its caller from the call's API key (`gateway.auth`);
gRPC health and reflection are other services and stay open.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypeVar

from order_execution.gateway import metrics
from order_execution.gateway.auth import Authenticator, Caller
from order_execution.gateway.commands import AccountScope, Command, Requester
from order_execution.gateway.handlers import Intake
from order_execution.gateway.proto_mapping import (
    amend_order_from_pb,
    cancel_all_from_pb,
    cancel_order_from_pb,
    get_order_from_pb,
    list_orders_from_pb,
    order_to_pb,
    place_batch_from_pb,
    place_order_from_pb,
    update_to_pb,
    watch_orders_from_pb,
)
from order_execution.gateway.status_mapping import Context, abort_with, answer, status_of
from order_execution.gateway.updates import RESUME_TOKEN_METADATA, UpdateHub
from order_execution.orders.errors import OrderServiceError
from order_execution.orders.metrics import OTHER
from order_execution.orders.outbox import OutboxEntry
from order_execution.orders.store import CreateResult
from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc

log = logging.getLogger(__name__)


def _client(user_id: str, context: Context) -> str:
    """Who is asking, for the per-client rate: the user id, else the peer's address."""
    return user_id or context.peer().rsplit(":", 1)[0]


R = TypeVar("R")


@dataclass
class _Identified:
    """The caller of a call, once `_run` has identified it (`caller` None: auth is off)."""

    done: bool = False
    caller: Caller | None = None


class OrderServicer(order_pb2_grpc.OrderServiceServicer):
    """The OrderService methods; `auth` None means authentication is off (tests)."""

    def __init__(self, intake: Intake, hub: UpdateHub, auth: Authenticator | None = None) -> None:
        self._intake = intake
        self._hub = hub
        self._auth = auth

    async def _caller(self, context: Context) -> Caller | None:
        """The authenticated caller (None with auth off); raises Unauthenticated, answered late
        (`gateway.auth_failures`)."""
        if self._auth is None:
            return None
        return await self._auth.authenticate(context.invocation_metadata(), peer=context.peer())

    async def _run(
        self,
        context: Context,
        parse: Callable[[], Command[R]],
        user_id: str = "",
        identified: _Identified | None = None,
    ) -> R:
        """Identify the caller (noted in `identified`), parse the request and hand the command to
        the intake, charged to the caller (or `user_id`, else the peer); whatever is raised ends
        the call mapped."""

        async def run() -> R:
            caller = await self._caller(context)
            if identified is not None:
                identified.caller, identified.done = caller, True
            command = parse()
            return await self._intake.handle(command, Requester(caller, _client(user_id, context)))

        return await answer(context, run)

    async def CreateOrder(self, request: pb.CreateOrderRequest, context: Context) -> pb.CreateOrderResponse:
        started = time.perf_counter()
        identified = _Identified()
        try:
            result = await self._run(
                context, lambda: place_order_from_pb(request), request.user_id, identified
            )
        except Exception:
            metrics.order_refused(self._refused_account(request.account, identified))
            raise
        metrics.order_answered(result.order.account, time.perf_counter() - started, created=result.created)
        return _created_to_pb(result)

    def _refused_account(self, requested: str, identified: _Identified) -> str:
        """The account a refused CreateOrder counts under: the one it names, else its caller's
        default; "other" when the caller was never identified (a missing or invalid key)."""
        if not identified.done:
            return OTHER
        return self._intake.accounts.requested_or_default(requested, identified.caller)

    async def CancelOrder(self, request: pb.CancelOrderRequest, context: Context) -> pb.CancelOrderResponse:
        order = await self._run(context, lambda: cancel_order_from_pb(request))
        metrics.ORDERS_CANCELED.inc()
        message = order_to_pb(order)
        return pb.CancelOrderResponse(
            order_id=order.order_id, state=message.state, timestamp=order.updated_at, order=message
        )

    async def GetOrder(self, request: pb.GetOrderRequest, context: Context) -> pb.GetOrderResponse:
        order = await self._run(context, lambda: get_order_from_pb(request))
        return pb.GetOrderResponse(order=order_to_pb(order))

    async def ListOrders(self, request: pb.ListOrdersRequest, context: Context) -> pb.ListOrdersResponse:
        page = await self._run(context, lambda: list_orders_from_pb(request))
        return pb.ListOrdersResponse(
            orders=[order_to_pb(o) for o in page.orders], next_page_token=page.next_page_token
        )

    async def CreateOrders(
        self, request: pb.CreateOrdersRequest, context: Context
    ) -> pb.CreateOrdersResponse:
        results = await self._run(context, lambda: place_batch_from_pb(request))
        return pb.CreateOrdersResponse(results=[_item_to_pb(item) for item in results])

    async def CancelAllOrders(
        self, request: pb.CancelAllOrdersRequest, context: Context
    ) -> pb.CancelAllOrdersResponse:
        orders = await self._run(context, lambda: cancel_all_from_pb(request))
        metrics.ORDERS_CANCELED.inc(len(orders))
        return pb.CancelAllOrdersResponse(orders=[order_to_pb(o) for o in orders])

    async def AmendOrder(self, request: pb.AmendOrderRequest, context: Context) -> pb.AmendOrderResponse:
        order = await self._run(context, lambda: amend_order_from_pb(request))
        return pb.AmendOrderResponse(order=order_to_pb(order))

    async def StreamOrderUpdates(
        self, request: pb.StreamOrderUpdatesRequest, context: Context
    ) -> AsyncIterator[pb.OrderUpdate]:
        """The caller's order updates, live, after a replay from `resume_token` if given: on the
        request's `account`, else every account the caller may trade.

        Refused with RESOURCE_EXHAUSTED when the caller (the API client with auth on, else
        the peer's address: a caller-chosen user_id would not bound anyone) or the gateway
        holds its cap of open streams (server.max_streams_per_client, server.max_streams).
        """

        async def open_stream() -> tuple[Caller | None, AccountScope, str]:
            caller = await self._caller(context)
            accounts = await self._intake.handle(
                watch_orders_from_pb(request), Requester(caller, _client("", context))
            )
            return caller, accounts, self._hub.resume_point(request.resume_token)

        caller, accounts, after = await answer(context, open_stream)
        owner = caller.name if caller is not None else None
        client = owner if owner is not None else _client("", context)
        metrics.UPDATE_STREAMS.inc()
        try:
            async with self._hub.subscribe(
                request.symbols,
                user_id=request.user_id,
                after=after,
                owner=owner,
                accounts=accounts,
                client=client,
            ) as updates:
                async for update in updates:
                    yield update.rendered(_update_to_pb)  # built once per gateway, whatever the streams
            # The gateway is shutting down: end with OK, and say where to resume elsewhere.
            context.set_trailing_metadata(((RESUME_TOKEN_METADATA, updates.resume_token),))
        except Exception as exc:  # a slow reader, a cap, a store failure: all leave through one map
            await abort_with(context, exc)
        finally:
            metrics.UPDATE_STREAMS.dec()


def _update_to_pb(entry: OutboxEntry) -> pb.OrderUpdate:
    """A stream's message for an outbox entry (the same for every stream: the hub shares it)."""
    return update_to_pb(
        entry.order, update_type=entry.update_type, fills=entry.fills, resume_token=entry.entry_id
    )


def _created_to_pb(created: CreateResult) -> pb.CreateOrderResponse:
    """A CreateOrder answer: the order, and whether it was there already (`duplicate`)."""
    order = created.order
    message = order_to_pb(order)
    return pb.CreateOrderResponse(
        order_id=order.order_id,
        client_order_id=order.client_order_id,
        state=message.state,
        timestamp=order.created_at,
        duplicate=not created.created,
        order=message,
    )


def _item_to_pb(item: CreateResult | OrderServiceError) -> pb.CreateOrderResult:
    """One batch item on the wire: its CreateOrder answer, or its error's status name and message."""
    if isinstance(item, OrderServiceError):
        return pb.CreateOrderResult(error_code=status_of(item).name, error_message=str(item))
    return pb.CreateOrderResult(response=_created_to_pb(item))
