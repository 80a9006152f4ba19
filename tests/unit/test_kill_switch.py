"""The kill switch and AdminService: shared by replicas, audited, admins only; reservations released."""

from __future__ import annotations

import secrets
from decimal import Decimal
from typing import Any, cast

import fakeredis
import grpc
import pytest
import redis.exceptions

from order_execution.exchange.client import BinanceClient
from order_execution.gateway.auth import API_KEY_HEADER
from order_execution.listener.risk_feeds import RiskFeeds
from order_execution.orders import fsm, metrics
from order_execution.orders.errors import StoreUnavailable
from order_execution.orders.model import OrderState
from order_execution.orders.risk_state import RiskCheck, RiskState
from order_execution.orders.store import OrderStore
from order_execution.orders.store_outages import store_outages
from order_execution.proto import admin_pb2 as apb
from order_execution.proto import order_pb2 as pb
from order_execution.runtime.settings import ApiClientSettings, AuthSettings
from order_execution.runtime.settings_access import hash_key
from tests.factories import make_order
from tests.unit.risk_harness import risk_replica
from tests.unit.test_risk_limits import limit_buy, refused

ADMIN_KEY, TRADER_KEY = (secrets.token_urlsafe(32) for _ in range(2))
AUTH = AuthSettings(
    clients=[
        ApiClientSettings(name="ops", key_sha256=hash_key(ADMIN_KEY), admin=True),
        ApiClientSettings(name="desk-1", key_sha256=hash_key(TRADER_KEY)),
    ]
)
ADMIN = ((API_KEY_HEADER, ADMIN_KEY),)
TRADER = ((API_KEY_HEADER, TRADER_KEY),)


def switch(
    mode: apb.TradingMode.ValueType, reason: str = "", cancel_open: bool = False
) -> apb.SetTradingModeRequest:
    return apb.SetTradingModeRequest(mode=mode, reason=reason, cancel_open=cancel_open)


async def test_halted_on_one_replica_refuses_on_the_other(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    async with risk_replica(fake_redis) as one, risk_replica(fake_redis) as two:
        await two.orders.CreateOrder(limit_buy("0.002"), timeout=5)
        status = await one.admin.SetTradingMode(switch(apb.HALTED, "exchange incident"), timeout=5)
        assert status.mode == apb.HALTED and status.set_by == "anonymous"
        assert metrics.TRADING_MODE._value.get() == 2
        message = await refused(two, limit_buy("0.002"))  # at once: the store's create step reads it
        assert message.startswith("trading_mode: trading is HALTED: no new orders")
        reduce_only = limit_buy("0.002", side=pb.SELL, reduce_only=True)
        await refused(two, reduce_only)  # HALTED takes nothing, not even a reduce-only order
        await two.admin.SetTradingMode(switch(apb.ACTIVE, "resolved"), timeout=5)
        await one.orders.CreateOrder(limit_buy("0.002"), timeout=5)


async def test_reducing_takes_only_orders_that_shrink_a_position(
    fake_redis: fakeredis.FakeAsyncRedis,
) -> None:
    await RiskState(fake_redis).set_positions({"BTCUSDT": Decimal("0.02"), "ETHUSDT": Decimal(-1)})
    async with risk_replica(fake_redis) as one, risk_replica(fake_redis) as two:
        await one.admin.SetTradingMode(switch(apb.REDUCING, "wind down"), timeout=5)
        assert "REDUCING: only orders that reduce a position" in await refused(two, limit_buy("0.002"))
        await two.orders.CreateOrder(limit_buy("0.01", side=pb.SELL), timeout=5)  # long 0.02 -> 0.01
        await refused(two, limit_buy("0.011", side=pb.SELL))  # with the open 0.01 it would flip short
        await two.orders.CreateOrder(limit_buy("0.01", side=pb.SELL, reduce_only=True), timeout=5)
        eth_buy = pb.CreateOrderRequest(
            symbol="ETHUSDT", side=pb.BUY, type=pb.LIMIT, quantity="1", price="3000", time_in_force=pb.GTC
        )
        await two.orders.CreateOrder(eth_buy, timeout=5)  # short 1 ETH: buying reduces it


async def test_halt_with_cancel_open_cancels_every_open_order(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    async with risk_replica(fake_redis) as gw:
        ids = [(await gw.orders.CreateOrder(limit_buy("0.002"), timeout=5)).order_id for _ in range(3)]
        submitted = await gw.store.transition(ids[0], lambda o: o.replace(state=OrderState.SUBMITTED))
        assert submitted.changed
        status = await gw.admin.SetTradingMode(switch(apb.HALTED, "stop", cancel_open=True), timeout=5)
        assert status.canceled_orders == 3
        states = [(await gw.store.get(i)).state for i in ids]
        # NEW ones are canceled here; the one at the exchange waits for its cancel there.
        assert states == [OrderState.PENDING_CANCEL, OrderState.CANCELED, OrderState.CANCELED]
        assert await RiskState(fake_redis).open_orders() == 1
        assert status.audit[0].action == "cancel open orders" and status.audit[0].canceled_orders == 3
        assert status.audit[1].action == "mode HALTED"


async def test_cancel_open_is_for_halted_only(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    async with risk_replica(fake_redis) as gw:
        for request in (switch(apb.REDUCING, cancel_open=True), switch(apb.TRADING_MODE_UNSPECIFIED)):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await gw.admin.SetTradingMode(request, timeout=5)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_admin_calls_need_the_admin_role_and_are_audited(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    async with risk_replica(fake_redis, auth=AUTH) as gw:
        for metadata, code in (
            (TRADER, grpc.StatusCode.PERMISSION_DENIED),
            ((), grpc.StatusCode.UNAUTHENTICATED),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await gw.admin.SetTradingMode(switch(apb.HALTED), metadata=metadata, timeout=5)
            assert caught.value.code() == code
        assert "desk-1 has no admin role" in (
            await _details(gw.admin.GetRiskLimits(apb.GetRiskLimitsRequest(), metadata=TRADER, timeout=5))
        )
        await gw.admin.SetTradingMode(switch(apb.HALTED, "fat finger at 10:02"), metadata=ADMIN, timeout=5)
        await gw.admin.SetRiskLimits(
            apb.SetRiskLimitsRequest(
                limits=apb.RiskLimits(max_position_quantity={"BTCUSDT": "2"}),
                fields=["max_position_quantity"],
                reason="smaller book",
            ),
            metadata=ADMIN,
            timeout=5,
        )
        await gw.admin.SetTradingMode(switch(apb.ACTIVE, "checked"), metadata=ADMIN, timeout=5)
        status = await gw.admin.GetTradingMode(apb.GetTradingModeRequest(), metadata=ADMIN, timeout=5)
    assert (status.mode, status.set_by, status.reason) == (apb.ACTIVE, "ops", "checked")
    trail = [(e.actor, e.action, e.reason) for e in status.audit]
    assert trail == [
        ("ops", "mode ACTIVE", "checked"),
        ("ops", 'limits max_position_quantity={"BTCUSDT": "2"}', "smaller book"),
        ("ops", "mode HALTED", "fat finger at 10:02"),
    ]
    assert all(e.time > 0 for e in status.audit)


async def _details(call: Any) -> str:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.details() or ""
    raise AssertionError("the call succeeded")


async def test_a_reservation_follows_fills_and_ends_with_the_order(
    fake_redis: fakeredis.FakeAsyncRedis,
) -> None:
    store = OrderStore(fake_redis)
    state = RiskState(fake_redis)
    order = make_order(quantity=Decimal("0.010"))
    await store.create(order, risk=RiskCheck(max_open_orders=5))
    assert await state.open_quantities() == {"BTCUSDT:BUY": Decimal("0.01")}
    report = fsm.ExchangeReport(OrderState.PARTIALLY_FILLED, filled_quantity=Decimal("0.004"))
    await store.transition(
        order.order_id, lambda o: fsm.apply_report(o.replace(state=OrderState.SUBMITTED), report)
    )
    assert await state.open_quantities() == {"BTCUSDT:BUY": Decimal("0.006")}
    assert await state.open_orders() == 1
    done = fsm.ExchangeReport(OrderState.FILLED, filled_quantity=Decimal("0.010"))
    await store.transition(order.order_id, lambda o: fsm.apply_report(o, done))
    assert await state.open_quantities() == {}
    assert await state.open_orders() == 0
    # An order stored without risk (before this existed, or a caller without a gate) holds nothing.
    other = make_order()
    await store.create(other)
    await store.transition(other.order_id, lambda o: fsm.transition(o, OrderState.CANCELED))
    assert await state.open_orders() == 0


class _Exchange:
    """premiumIndex and positionRisk as the simulator answers them."""

    async def premium_index(self) -> list[dict[str, Any]]:
        return [{"symbol": "BTCUSDT", "markPrice": "50123.4"}, {"symbol": "DOGEUSDT", "markPrice": "0.1"}]

    async def position_risk(self, symbol: str = "") -> list[dict[str, Any]]:
        return [
            {"symbol": "BTCUSDT", "positionSide": "BOTH", "positionAmt": "0.010"},
            {"symbol": "ETHUSDT", "positionSide": "LONG", "positionAmt": "2"},
            {"symbol": "ETHUSDT", "positionSide": "SHORT", "positionAmt": "-0.5"},
        ]


async def test_the_listener_keeps_marks_and_positions(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    state = RiskState(fake_redis)
    feeds = RiskFeeds(state, cast(BinanceClient, _Exchange()), symbols=["BTCUSDT", "ETHUSDT"])
    await feeds.poll_marks()
    marks = await state.marks()
    assert list(marks) == ["BTCUSDT"] and marks["BTCUSDT"].price == Decimal("50123.4")
    await feeds.refresh_positions()
    assert await state.positions() == {"BTCUSDT": Decimal("0.01"), "ETHUSDT": Decimal("1.5")}
    # ACCOUNT_UPDATE carries only what changed: here ETHUSDT's SHORT side, closed.
    update = {"e": "ACCOUNT_UPDATE", "a": {"m": "ORDER", "P": [{"s": "ETHUSDT", "pa": "0", "ps": "SHORT"}]}}
    feeds.note_account_update(update)
    await feeds.flush_positions()
    assert await state.positions() == {"BTCUSDT": Decimal("0.01"), "ETHUSDT": Decimal(2)}
    feeds.note_account_update(
        {"e": "ACCOUNT_UPDATE", "a": {"P": [{"s": "BTCUSDT", "pa": "-0.3", "ps": "BOTH"}]}}
    )
    await feeds.flush_positions()
    assert (await state.positions())["BTCUSDT"] == Decimal("-0.3")


async def test_account_updates_are_noted_at_once_and_written_together(
    fake_redis: fakeredis.FakeAsyncRedis,
) -> None:
    state = RiskState(fake_redis)
    feeds = RiskFeeds(state, cast(BinanceClient, _Exchange()), symbols=["BTCUSDT", "ETHUSDT"])
    for symbol, amount in (("BTCUSDT", "0.1"), ("ETHUSDT", "-2"), ("BTCUSDT", "0.3")):
        assert feeds.note_account_update({"e": "ACCOUNT_UPDATE", "a": {"P": [{"s": symbol, "pa": amount}]}})
    assert not feeds.note_account_update({"e": "ACCOUNT_UPDATE", "a": {"B": []}})  # balances only
    assert await state.positions() == {}  # nothing written yet
    writes: list[dict[str, Decimal]] = []
    set_positions = state.set_positions

    async def counted(positions: dict[str, Decimal], *, replace: bool = False) -> None:
        writes.append(positions)
        await set_positions(positions, replace=replace)

    state.set_positions = counted  # type: ignore[method-assign]
    await feeds.flush_positions()
    await feeds.flush_positions()  # nothing new: no write
    assert writes == [{"BTCUSDT": Decimal("0.3"), "ETHUSDT": Decimal(-2)}]
    assert await state.positions() == {"BTCUSDT": Decimal("0.3"), "ETHUSDT": Decimal(-2)}


async def test_a_failed_position_write_is_tried_again_by_the_next_flush(
    fake_redis: fakeredis.FakeAsyncRedis,
) -> None:
    state = RiskState(fake_redis)
    feeds = RiskFeeds(state, cast(BinanceClient, _Exchange()), symbols=["BTCUSDT"])
    feeds.note_account_update({"e": "ACCOUNT_UPDATE", "a": {"P": [{"s": "BTCUSDT", "pa": "0.5"}]}})
    set_positions = state.set_positions

    async def down(positions: dict[str, Decimal], *, replace: bool = False) -> None:
        with store_outages():  # what RiskState raises for it
            raise redis.exceptions.ConnectionError("Redis is down")

    state.set_positions = down  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        await feeds.flush_positions()
    state.set_positions = set_positions  # type: ignore[method-assign]
    await feeds.flush_positions()
    assert await state.positions() == {"BTCUSDT": Decimal("0.5")}
