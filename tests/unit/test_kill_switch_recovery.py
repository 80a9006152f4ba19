"""A kill switch's cancel of every open order outlives the gateway that took it: it is recorded with
the HALTED mode before the walk, marked done after it, and finished by the listener if left pending."""

from __future__ import annotations

import asyncio
from typing import Any

import fakeredis
import grpc
import pytest

from order_execution.cli.main import main
from order_execution.orders.cancel_open import CancelOpenState
from order_execution.orders.model import OrderState
from order_execution.orders.risk_state import RiskState, TradingMode
from order_execution.orders.store import OrderStore, TransitionResult
from order_execution.proto import admin_pb2 as apb
from order_execution.runtime.settings import Settings
from order_execution.service_layer.kill_switch import (
    LISTENER_ACTION,
    cancel_open_orders,
    finish_overdue_cancel_open,
)
from order_execution.tasks.messages import cancel_order_push
from tests.factories import make_order, queued_messages
from tests.unit.risk_harness import risk_replica
from tests.unit.test_kill_switch import switch
from tests.unit.test_risk_limits import limit_buy

S = OrderState


async def open_book(store: OrderStore, count: int = 5, at_exchange: int = 3) -> list[str]:
    """`count` open orders, oldest first: the first `at_exchange` resting at the exchange, the rest NEW."""
    ids = []
    for n in range(count):
        order = make_order(order_id=f"o{n}", client_order_id=f"oe-{n}", created_at=1_000 + n)
        await store.create(order)
        if n < at_exchange:
            await store.transition(order.order_id, lambda o: o.replace(state=S.SUBMITTED))
        ids.append(order.order_id)
    return ids


async def states(store: OrderStore, ids: list[str]) -> list[OrderState]:
    return [(await store.get(i)).state for i in ids]


async def cancels_queued(client: Any) -> list[str]:
    return [kwargs["order_id"] for name, kwargs in await queued_messages(client, "BTCUSDT")]


class GatewayDied(Exception):
    """Stands for the process going away in the middle of the walk."""


class DyingStore(OrderStore):
    """An order store whose process dies (GatewayDied) after `survives` transitions."""

    def __init__(self, client: Any, survives: int) -> None:
        super().__init__(client)
        self.survives = survives

    async def transition(self, order_id: str, change: Any, **kwargs: Any) -> TransitionResult:
        if self.survives == 0:
            raise GatewayDied("killed mid-walk")
        self.survives -= 1
        return await super().transition(order_id, change, **kwargs)


async def test_halt_with_cancel_open_records_the_request_before_the_walk_and_closes_it(
    fake_redis: fakeredis.FakeAsyncRedis,
) -> None:
    risk = RiskState(fake_redis)
    state = risk.every_account  # a SetTradingMode naming no account sets the switch for every account
    async with risk_replica(fake_redis) as gw:
        await gw.orders.CreateOrder(limit_buy("0.002"), timeout=5)
        seen_during_walk = []
        walk = gw.intake.cancel_open

        async def observed_walk(account: str | None = None) -> int:
            seen_during_walk.append((await state.mode()).cancel_open)
            assert account is None  # every account's open orders
            return await walk(account)

        gw.intake.cancel_open = observed_walk  # type: ignore[method-assign]
        status = await gw.admin.SetTradingMode(switch(apb.HALTED, "incident", cancel_open=True), timeout=5)
    assert status.canceled_orders == 1 and status.cancel_open_pending_since == 0  # done by the reply
    pending = seen_during_walk[0]
    assert pending is not None and (pending.requested_by, pending.reason) == ("anonymous", "incident")
    assert pending.state is CancelOpenState.PENDING and pending.requested_at == status.set_at
    done = await state.cancel_open()
    assert done is not None and done.request_id == pending.request_id
    assert (done.state, done.done_by, done.canceled_orders) == (CancelOpenState.DONE, "anonymous", 1)
    assert (await state.mode()).cancel_open is None  # nothing left pending
    assert [e.action for e in await risk.audit()] == ["cancel open orders", "mode HALTED"]
    assert await risk.cancel_open() is None  # the account's own switch asked for nothing


async def test_trading_mode_shows_a_cancel_open_left_pending(
    fake_redis: fakeredis.FakeAsyncRedis, capsys: pytest.CaptureFixture[str]
) -> None:
    """GetTradingMode names a pending cancel-open and who asked; `risk show` prints it."""
    state = RiskState(fake_redis).every_account
    await state.set_mode(TradingMode.HALTED, actor="ops", reason="incident", cancel_open=True)
    async with risk_replica(fake_redis) as gw:
        shown = await gw.admin.GetTradingMode(apb.GetTradingModeRequest(), timeout=5)
        assert await asyncio.to_thread(main, ["risk", "show", "--target", gw.target]) == 0
    asked = await state.cancel_open()
    assert asked is not None
    assert (shown.cancel_open_pending_since, shown.cancel_open_requested_by) == (asked.requested_at, "ops")
    assert "cancel of every open order: PENDING since" in capsys.readouterr().out


async def test_a_halt_without_cancel_open_records_none(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    async with risk_replica(fake_redis) as gw:
        await gw.admin.SetTradingMode(switch(apb.HALTED, "pause"), timeout=5)
    assert await RiskState(fake_redis).cancel_open() is None
    with pytest.raises(ValueError, match="HALTED only"):
        await RiskState(fake_redis).set_mode(TradingMode.REDUCING, actor="ops", reason="", cancel_open=True)


async def test_a_gateway_dying_mid_walk_leaves_the_request_pending(
    fake_redis: fakeredis.FakeAsyncRedis,
) -> None:
    async with risk_replica(fake_redis) as gw:
        ids = [(await gw.orders.CreateOrder(limit_buy("0.002"), timeout=5)).order_id for _ in range(3)]
        gw.intake.store = DyingStore(fake_redis, survives=1)
        with pytest.raises(grpc.aio.AioRpcError):
            await gw.admin.SetTradingMode(switch(apb.HALTED, "incident", cancel_open=True), timeout=5)
        status = await RiskState(fake_redis).every_account.mode()
        assert status.mode is TradingMode.HALTED
        assert status.cancel_open is not None and status.cancel_open.requested_by == "anonymous"
        assert (await states(gw.store, ids)).count(S.NEW) == 2  # one canceled before it died


async def test_the_walk_cancels_new_orders_here_and_queues_a_cancel_for_the_others(
    fake_redis: fakeredis.FakeAsyncRedis,
) -> None:
    store = OrderStore(fake_redis)
    ids = await open_book(store, count=4, at_exchange=2)
    final = make_order(order_id="done", client_order_id="oe-done")
    await store.create(final)
    await store.transition("done", lambda o: o.replace(state=S.CANCELED))
    assert await cancel_open_orders(store, cancel_order_push) == 4
    assert await states(store, ids) == [S.PENDING_CANCEL] * 2 + [S.CANCELED] * 2
    assert await cancels_queued(fake_redis) == ids[:2]
    # Idempotent: a second walk (the listener after the gateway) changes nothing and queues nothing.
    assert await cancel_open_orders(store, cancel_order_push) == 0
    assert await cancels_queued(fake_redis) == ids[:2]


async def test_the_listener_finishes_a_walk_its_gateway_left_pending(
    fake_redis: fakeredis.FakeAsyncRedis,
) -> None:
    state = RiskState(fake_redis)
    ids = await open_book(OrderStore(fake_redis), count=5, at_exchange=3)
    status = await state.set_mode(
        TradingMode.HALTED, actor="ops", reason="exchange incident", cancel_open=True
    )
    with pytest.raises(GatewayDied):  # the gateway's walk: two orders, then the process is gone
        await cancel_open_orders(DyingStore(fake_redis, survives=2), cancel_order_push)
    store = OrderStore(fake_redis)
    assert await states(store, ids) == [S.PENDING_CANCEL] * 2 + [S.SUBMITTED, S.NEW, S.NEW]

    young = await finish_overdue_cancel_open(
        state, store, cancel_order_push, grace_ms=60_000, actor="listener host:42"
    )
    assert young is None  # its gateway may still be walking
    assert await states(store, ids) == [S.PENDING_CANCEL] * 2 + [S.SUBMITTED, S.NEW, S.NEW]

    await fake_redis.hset(state.keys.cancel_open, "requested_at", str(status.set_at - 5))
    finished = await finish_overdue_cancel_open(
        state, store, cancel_order_push, grace_ms=1, actor="listener host:42"
    )
    assert finished == 3
    assert await states(store, ids) == [S.PENDING_CANCEL] * 3 + [S.CANCELED] * 2
    assert await cancels_queued(fake_redis) == ids[:3]  # each order's cancel queued once
    done = await state.cancel_open()
    assert done is not None
    assert (done.state, done.done_by, done.canceled_orders) == (CancelOpenState.DONE, "listener host:42", 3)
    latest = (await state.audit())[0]
    assert (latest.actor, latest.action, latest.reason, latest.canceled_orders) == (
        "listener host:42",
        LISTENER_ACTION,
        "exchange incident",
        3,
    )
    # Done is done: the next check finds nothing to finish.
    assert await finish_overdue_cancel_open(state, store, cancel_order_push, grace_ms=1, actor="l") is None


async def test_leaving_halted_drops_a_pending_cancel(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    """Orders placed after trading resumed are never canceled by a stale request."""
    state = RiskState(fake_redis)
    store = OrderStore(fake_redis)
    await state.set_mode(TradingMode.HALTED, actor="ops", reason="incident", cancel_open=True)
    await state.set_mode(TradingMode.ACTIVE, actor="ops", reason="false alarm")
    ids = await open_book(store, count=2, at_exchange=1)
    dropped = await state.cancel_open()
    assert dropped is not None and (dropped.state, dropped.done_by) == (CancelOpenState.DROPPED, "ops")
    assert (await state.mode()).cancel_open is None
    assert [e.action for e in await state.audit()][:2] == ["cancel open orders dropped", "mode ACTIVE"]
    assert await finish_overdue_cancel_open(state, store, cancel_order_push, grace_ms=1, actor="l") is None
    assert await states(store, ids) == [S.SUBMITTED, S.NEW]
    # A HALTED switch without cancel_open keeps a pending request; the listener waits for HALTED.
    await state.set_mode(TradingMode.HALTED, actor="ops", reason="again", cancel_open=True)
    await state.set_mode(TradingMode.HALTED, actor="ops", reason="still")
    assert (await state.mode()).cancel_open is not None


async def test_a_late_walk_never_closes_a_newer_request(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    state = RiskState(fake_redis)
    first = await state.set_mode(TradingMode.HALTED, actor="ops", reason="one", cancel_open=True)
    second = await state.set_mode(TradingMode.HALTED, actor="ops", reason="two", cancel_open=True)
    assert first.cancel_open is not None and second.cancel_open is not None
    assert not await state.finish_cancel_open(first.cancel_open, actor="gw-1", canceled=2)
    still = await state.cancel_open()
    assert still is not None and still.pending and still.request_id == second.cancel_open.request_id
    assert (await state.audit())[0].canceled_orders == 2  # the walk's cancels are audited all the same
    assert await state.finish_cancel_open(second.cancel_open, actor="gw-2", canceled=0)
    assert not await state.finish_cancel_open(second.cancel_open, actor="listener", canceled=0)
    closed = await state.cancel_open()
    assert closed is not None and (closed.state, closed.done_by) == (CancelOpenState.DONE, "gw-2")


def test_the_grace_period_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().risk.cancel_open_grace_ms == 10_000
    monkeypatch.setenv("ORDER_EXECUTION__RISK__CANCEL_OPEN_GRACE_MS", "1500")
    assert Settings().risk.cancel_open_grace_ms == 1500
