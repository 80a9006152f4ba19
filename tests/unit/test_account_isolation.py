"""Exchange accounts in OrderService: each request's account resolved in one place, and a client
limited to some accounts never reaching another's orders.

The gateway serves two accounts, `a` (the first, so the default) and `b`. `alice` may trade `a`
only. Her orders on `b` are planted in the store directly (as if placed before her key was
limited to `a`): same owner, so only the account check keeps them from her. Every call that
reaches an existing order answers NOT_FOUND for them exactly as for an id never used; a call
that names `b` is refused PERMISSION_DENIED naming it; an account not configured is
INVALID_ARGUMENT listing the configured ones. Over a real gRPC socket on fakeredis.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import fakeredis
import grpc
import pytest

from order_execution.exchange.breakers import Group, breaker_key
from order_execution.gateway.accounts import TradingAccounts
from order_execution.gateway.admission import AccountGate, Admission
from order_execution.gateway.auth import API_KEY_HEADER, Caller, PermissionDenied
from order_execution.orders.errors import ExchangeNotAccepting, InvalidOrder, Overloaded
from order_execution.orders.model import Order, OrderState
from order_execution.orders.store import OrderStore
from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc
from order_execution.runtime.settings import AdmissionSettings, ApiClientSettings, AuthSettings
from order_execution.runtime.settings_access import hash_key
from order_execution.tasks.queues import CANCEL_ALL_ORDERS
from tests.factories import make_order, queued_messages
from tests.unit.gateway_harness import limit_order, serving_gateway

ACCOUNTS = ("a", "b")
ALICE_KEY, DESK_KEY, ANY_KEY = (secrets.token_urlsafe(32) for _ in range(3))
AUTH = AuthSettings(
    clients=[
        ApiClientSettings(name="alice", key_sha256=hash_key(ALICE_KEY), accounts=["a"]),
        ApiClientSettings(name="desk", key_sha256=hash_key(DESK_KEY), default_account="b"),
        ApiClientSettings(name="any", key_sha256=hash_key(ANY_KEY)),
    ]
)
ALICE, DESK, ANY = (((API_KEY_HEADER, key),) for key in (ALICE_KEY, DESK_KEY, ANY_KEY))
DENIED_B = "account: client alice may not trade account 'b'; its accounts: a"
UNKNOWN_ZZ = "account: unknown account 'zz'; configured: a, b"


# --- resolution on its own ------------------------------------------------------------------

TWO = TradingAccounts(ACCOUNTS)


@pytest.mark.parametrize(
    ("caller", "expected"),
    [
        (None, "a"),  # auth off: the first configured
        (Caller("any"), "a"),  # a client with every account and no default: the first configured
        (Caller("bee", accounts=("b", "a")), "b"),  # its first account
        (Caller("desk", default_account="b"), "b"),  # its default account
        (Caller("both", accounts=("a", "b"), default_account="b"), "b"),  # the default before the first
    ],
    ids=["auth-off", "unrestricted", "first-of-its-own", "default-account", "default-over-first"],
)
def test_an_order_naming_no_account_goes_to_the_clients_default(caller: Caller | None, expected: str) -> None:
    assert TWO.for_order("", caller) == expected


def test_an_order_naming_an_account_goes_there_if_configured_and_allowed() -> None:
    assert TWO.for_order("b", None) == "b"  # auth off: any configured account
    assert TWO.for_order("b", Caller("any")) == "b"
    with pytest.raises(PermissionDenied) as denied:
        TWO.for_order("b", Caller("alice", accounts=("a",)))
    assert str(denied.value) == DENIED_B
    with pytest.raises(InvalidOrder) as unknown:
        TWO.for_order("zz", None)
    assert unknown.value.field == "account" and str(unknown.value) == UNKNOWN_ZZ
    with pytest.raises(InvalidOrder) as long:  # a long name is quoted cut short
        TWO.for_order("x" * 5000, None)
    assert len(str(long.value)) < 120


def test_a_read_covers_the_account_named_else_every_account_the_client_may_trade() -> None:
    alice = Caller("alice", accounts=("a",))
    assert TWO.scope("", None) is None  # auth off: not filtered
    assert TWO.scope("", Caller("any")) is None
    assert TWO.scope("", alice) == frozenset({"a"})
    assert TWO.scope("a", alice) == frozenset({"a"})
    assert TWO.scope("b", None) == frozenset({"b"})
    with pytest.raises(PermissionDenied, match="account 'b'"):
        TWO.scope("b", alice)
    with pytest.raises(InvalidOrder, match="configured: a, b"):
        TWO.scope("zz", None)
    assert TWO.covered(None) == ("a", "b") and TWO.covered(frozenset({"b"})) == ("b",)


# --- over gRPC (auth on; `open_gateway`: auth off) ------------------------------------------


@dataclass
class Gateway:
    stub: order_pb2_grpc.OrderServiceAsyncStub
    store: OrderStore
    redis: fakeredis.FakeAsyncRedis

    async def plant(self, account: str, *, owner: str = "alice", state: OrderState = OrderState.NEW) -> Order:
        """An order of `owner` on `account`, stored as the gateway would store it (in `state`)."""
        order_id = str(uuid.uuid4())
        order = make_order(
            order_id=order_id, client_order_id=f"p-{order_id[:8]}", owner=owner, account=account
        )
        await self.store.create(order)
        if state is not OrderState.NEW:
            await self.store.transition(order_id, lambda o: o.replace(state=state))
        return await self.store.get(order_id)


async def _gateway(auth: AuthSettings | None) -> AsyncIterator[Gateway]:
    redis = fakeredis.FakeAsyncRedis()
    async with (
        serving_gateway(redis, redis, auth=auth, accounts=ACCOUNTS) as target,
        grpc.aio.insecure_channel(target) as channel,
    ):
        yield Gateway(order_pb2_grpc.OrderServiceStub(channel), OrderStore(redis), redis)
    await redis.aclose()


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    async for running in _gateway(AUTH):
        yield running


@pytest.fixture
async def open_gateway() -> AsyncIterator[Gateway]:
    """Auth off."""
    async for running in _gateway(None):
        yield running


async def next_update(stream: Any) -> pb.OrderUpdate:
    """The stream's next update, within 2 s."""
    update = await asyncio.wait_for(stream.read(), 2)
    assert isinstance(update, pb.OrderUpdate)
    return update


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_a_new_order_carries_the_account_it_was_resolved_to(gateway: Gateway) -> None:
    stub = gateway.stub
    assert (await stub.CreateOrder(limit_order(client_order_id="c1"), metadata=ALICE)).order.account == "a"
    desks = await stub.CreateOrder(limit_order(client_order_id="c2"), metadata=DESK)
    assert desks.order.account == "b"
    assert (await stub.CreateOrder(limit_order(client_order_id="c3"), metadata=ANY)).order.account == "a"
    named = await stub.CreateOrder(limit_order(client_order_id="c4", account="b"), metadata=ANY)
    assert named.order.account == "b"
    assert (await gateway.store.get(named.order_id)).account == "b"  # stored so, not only answered
    # Queued for the account's own workers.
    queued = await queued_messages(gateway.redis, "BTCUSDT", "b")
    assert [kwargs["order_id"] for _, kwargs in queued] == [desks.order_id, named.order_id]


async def test_an_account_the_client_may_not_trade_is_denied_and_nothing_is_stored(gateway: Gateway) -> None:
    stub = gateway.stub
    error = await refused(stub.CreateOrder(limit_order(client_order_id="x1", account="b"), metadata=ALICE))
    assert (error.code(), error.details()) == (grpc.StatusCode.PERMISSION_DENIED, DENIED_B)
    error = await refused(stub.CreateOrder(limit_order(client_order_id="x2", account="zz"), metadata=ANY))
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, UNKNOWN_ZZ)

    # A batch's own account is the whole call's: refused whole.
    batch = pb.CreateOrdersRequest(orders=[limit_order(client_order_id="x3")], account="b")
    error = await refused(stub.CreateOrders(batch, metadata=ALICE))
    assert (error.code(), error.details()) == (grpc.StatusCode.PERMISSION_DENIED, DENIED_B)
    # An item's own account fails that item alone.
    items = [limit_order(client_order_id="x4"), limit_order(client_order_id="x5", account="b")]
    results = (await stub.CreateOrders(pb.CreateOrdersRequest(orders=items), metadata=ALICE)).results
    assert results[0].response.order.account == "a"
    assert (results[1].error_code, results[1].error_message) == ("PERMISSION_DENIED", DENIED_B)
    for client_order_id in ("x1", "x3", "x5"):
        assert await gateway.store.find_by_client_id(client_order_id, "b") is None
    assert await queued_messages(gateway.redis, "BTCUSDT", "b") == []


async def test_a_batch_account_goes_to_the_items_that_name_none(gateway: Gateway) -> None:
    items = [limit_order(client_order_id="y1"), limit_order(client_order_id="y2", account="a")]
    request = pb.CreateOrdersRequest(orders=items, account="b")
    results = (await gateway.stub.CreateOrders(request, metadata=ANY)).results
    assert [r.response.order.account for r in results] == ["b", "a"]


async def test_a_client_order_id_is_idempotent_per_account(gateway: Gateway) -> None:
    stub = gateway.stub
    on_a = await stub.CreateOrder(limit_order(client_order_id="same-1", account="a"), metadata=ANY)
    on_b = await stub.CreateOrder(limit_order(client_order_id="same-1", account="b"), metadata=ANY)
    assert not on_a.duplicate and not on_b.duplicate
    assert on_a.order_id != on_b.order_id
    assert (on_a.order.account, on_b.order.account) == ("a", "b")
    again = await stub.CreateOrder(limit_order(client_order_id="same-1", account="b"), metadata=ANY)
    assert again.duplicate and again.order_id == on_b.order_id
    again = await stub.CreateOrder(limit_order(client_order_id="same-1"), metadata=ANY)  # default: a
    assert again.duplicate and again.order_id == on_a.order_id


async def test_an_order_on_another_account_is_not_found_like_an_unknown_id(gateway: Gateway) -> None:
    stub = gateway.stub
    theirs = await gateway.plant("b", state=OrderState.SUBMITTED)  # resting: amendable, cancelable
    own = await gateway.plant("a", state=OrderState.SUBMITTED)
    never = str(uuid.uuid4())
    for order_id in (theirs.order_id, never):
        expected = f"order {order_id!r} not found"
        for call in (
            stub.GetOrder(pb.GetOrderRequest(order_id=order_id), metadata=ALICE),
            stub.CancelOrder(pb.CancelOrderRequest(order_id=order_id), metadata=ALICE),
            stub.AmendOrder(pb.AmendOrderRequest(order_id=order_id, price="50001.0"), metadata=ALICE),
        ):
            error = await refused(call)
            assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, expected)
    assert (await gateway.store.get(theirs.order_id)).state is OrderState.SUBMITTED  # untouched
    assert await queued_messages(gateway.redis, "BTCUSDT", "b") == []
    # Her own order on `a` she reads, amends and cancels.
    got = await stub.GetOrder(pb.GetOrderRequest(order_id=own.order_id), metadata=ALICE)
    assert got.order.account == "a"
    await stub.AmendOrder(pb.AmendOrderRequest(order_id=own.order_id, price="50001.0"), metadata=ALICE)
    canceled = await stub.CancelOrder(pb.CancelOrderRequest(order_id=own.order_id), metadata=ALICE)
    assert canceled.state == pb.PENDING_CANCEL
    # A client that may trade every account reaches an order on `b` (of its own).
    desks = await gateway.plant("b", owner="desk")
    assert (
        await stub.GetOrder(pb.GetOrderRequest(order_id=desks.order_id), metadata=DESK)
    ).order.account == "b"


async def test_list_orders_covers_only_the_accounts_the_client_may_trade(gateway: Gateway) -> None:
    stub = gateway.stub
    mine = [await gateway.plant(account) for account in ("a", "b", "a", "b")]
    on_a = {o.order_id for o in mine if o.account == "a"}
    listed = await stub.ListOrders(pb.ListOrdersRequest(), metadata=ALICE)
    assert {o.order_id for o in listed.orders} == on_a and not listed.next_page_token
    listed = await stub.ListOrders(pb.ListOrdersRequest(account="a"), metadata=ALICE)
    assert {o.order_id for o in listed.orders} == on_a
    error = await refused(stub.ListOrders(pb.ListOrdersRequest(account="b"), metadata=ALICE))
    assert (error.code(), error.details()) == (grpc.StatusCode.PERMISSION_DENIED, DENIED_B)
    error = await refused(stub.ListOrders(pb.ListOrdersRequest(account="zz"), metadata=ALICE))
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, UNKNOWN_ZZ)


async def test_list_orders_pages_by_account_without_gaps(open_gateway: Gateway) -> None:
    """The account filter applies to rows read: pages of one account's orders, interleaved with
    another's, still list each of them once, newest first."""
    planted = [await open_gateway.plant(account, owner="") for account in ("a", "b") * 6]
    wanted = [o.order_id for o in sorted(planted, key=lambda o: (o.created_at, o.order_id), reverse=True)]
    wanted = [i for i in wanted if i in {o.order_id for o in planted if o.account == "b"}]
    listed: list[str] = []
    token = ""
    while True:
        request = pb.ListOrdersRequest(account="b", limit=2, page_token=token)
        page = await open_gateway.stub.ListOrders(request)
        assert all(o.account == "b" for o in page.orders)
        listed += [o.order_id for o in page.orders]
        token = page.next_page_token
        if not token:
            break
    assert listed == wanted
    every = await open_gateway.stub.ListOrders(pb.ListOrdersRequest(limit=100))
    assert len(every.orders) == 12  # auth off and no account named: every account's


async def test_the_update_stream_leaves_out_other_accounts(gateway: Gateway) -> None:
    stub = gateway.stub
    error = await refused(
        stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest(account="b"), metadata=ALICE).read()
    )
    assert (error.code(), error.details()) == (grpc.StatusCode.PERMISSION_DENIED, DENIED_B)
    live = stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest(), metadata=ALICE)
    await asyncio.sleep(0.1)  # registered
    await gateway.plant("b")
    shown = await gateway.plant("a")
    first = await next_update(live)
    assert first.order.order_id == shown.order_id  # her order on `b`, written first, never came
    # Resuming replays from the outbox: still not `b`.
    await gateway.plant("b")
    later = await gateway.plant("a")
    resumed = stub.StreamOrderUpdates(
        pb.StreamOrderUpdatesRequest(resume_token=first.resume_token), metadata=ALICE
    )
    assert (await next_update(resumed)).order.order_id == later.order_id
    assert (await next_update(live)).order.order_id == later.order_id
    for stream in (live, resumed):
        stream.cancel()


async def test_a_stream_naming_an_account_gets_only_that_accounts_updates(open_gateway: Gateway) -> None:
    stub = open_gateway.stub
    only_b = stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest(account="b"))
    every = stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest())
    await asyncio.sleep(0.1)
    on_a = await open_gateway.plant("a", owner="")
    on_b = await open_gateway.plant("b", owner="")
    assert (await next_update(only_b)).order.order_id == on_b.order_id
    got = [(await next_update(every)).order.order_id for _ in range(2)]
    assert got == [on_a.order_id, on_b.order_id]
    for stream in (only_b, every):
        stream.cancel()


async def test_cancel_all_moves_only_the_accounts_the_client_may_trade(gateway: Gateway) -> None:
    stub = gateway.stub
    theirs = await gateway.plant("b")
    own = await gateway.plant("a")
    error = await refused(
        stub.CancelAllOrders(pb.CancelAllOrdersRequest(symbol="BTCUSDT", account="b"), metadata=ALICE)
    )
    assert (error.code(), error.details()) == (grpc.StatusCode.PERMISSION_DENIED, DENIED_B)
    assert (await gateway.store.get(theirs.order_id)).state is OrderState.NEW
    moved = await stub.CancelAllOrders(pb.CancelAllOrdersRequest(symbol="BTCUSDT"), metadata=ALICE)
    assert [o.order_id for o in moved.orders] == [own.order_id]
    assert (await gateway.store.get(theirs.order_id)).state is OrderState.NEW
    assert (await gateway.store.get(own.order_id)).state is OrderState.CANCELED


async def test_cancel_all_with_auth_off_cancels_each_covered_account_at_the_exchange(
    open_gateway: Gateway,
) -> None:
    stub = open_gateway.stub
    on_a, on_b = await open_gateway.plant("a", owner=""), await open_gateway.plant("b", owner="")
    moved = await stub.CancelAllOrders(pb.CancelAllOrdersRequest(symbol="BTCUSDT", account="b"))
    assert [o.order_id for o in moved.orders] == [on_b.order_id]
    assert (await open_gateway.store.get(on_a.order_id)).state is OrderState.NEW

    def cancel_alls(messages: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        return [kwargs for actor, kwargs in messages if actor == CANCEL_ALL_ORDERS]

    assert cancel_alls(await queued_messages(open_gateway.redis, "BTCUSDT", "b")) == [
        {"symbol": "BTCUSDT", "account": "b"}
    ]
    assert cancel_alls(await queued_messages(open_gateway.redis, "BTCUSDT", "a")) == []
    await stub.CancelAllOrders(pb.CancelAllOrdersRequest(symbol="BTCUSDT"))  # every account
    assert (await open_gateway.store.get(on_a.order_id)).state is OrderState.CANCELED
    assert len(cancel_alls(await queued_messages(open_gateway.redis, "BTCUSDT", "a"))) == 1
    assert len(cancel_alls(await queued_messages(open_gateway.redis, "BTCUSDT", "b"))) == 2


# --- admission per account ------------------------------------------------------------------


async def test_admission_and_its_retry_path_are_per_account() -> None:
    """A full queue on `b` refuses `b`'s new orders only, and a retry of an order stored on `b`
    still gets that order back (looked up by its client id on `b`)."""
    redis = fakeredis.FakeAsyncRedis()
    admission = Admission(
        store=OrderStore(redis),
        settings=AdmissionSettings(max_queued_per_symbol=1, snapshot_max_age_ms=0),
        max_order_age_ms=5000,
    )
    async with (
        serving_gateway(redis, redis, auth=AUTH, admission=admission, accounts=ACCOUNTS) as target,
        grpc.aio.insecure_channel(target) as channel,
    ):
        stub = order_pb2_grpc.OrderServiceStub(channel)
        first = await stub.CreateOrder(limit_order(client_order_id="r0", account="b"), metadata=ANY)
        error = await refused(stub.CreateOrder(limit_order(client_order_id="r1", account="b"), metadata=ANY))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "not yet sent on account b" in (error.details() or "")
        await stub.CreateOrder(limit_order(client_order_id="r1", account="a"), metadata=ANY)
        retry = await stub.CreateOrder(limit_order(client_order_id="r0", account="b"), metadata=ANY)
        assert retry.duplicate and retry.order_id == first.order_id
    await redis.aclose()


async def test_one_accounts_full_queue_or_open_breaker_refuses_only_its_orders() -> None:
    redis = fakeredis.FakeAsyncRedis()
    store = OrderStore(redis)
    admission = Admission(
        store=store,
        settings=AdmissionSettings(max_queued_per_symbol=1, snapshot_max_age_ms=0),
        max_order_age_ms=5000,
        accounts={"a": AccountGate(None, "oe:venue:a"), "b": AccountGate(None, "oe:venue:b")},
    )
    await store.create(make_order(order_id="q1", client_order_id="q1", account="b"))
    await admission.check_create("BTCUSDT", "a")
    with pytest.raises(Overloaded, match="on account b"):
        await admission.check_create("BTCUSDT", "b")
    # The create breaker of b's venue open (as pybreaker writes it): a's venue still takes orders.
    await redis.set(breaker_key("oe:venue:b", Group.CREATE), "open")
    await store.transition("q1", lambda o: o.replace(state=OrderState.SUBMITTED))  # b's queue empty
    await admission.check_create("BTCUSDT", "a")
    with pytest.raises(ExchangeNotAccepting, match="binance_create_order is open"):
        await admission.check_create("BTCUSDT", "b")
    await redis.aclose()
