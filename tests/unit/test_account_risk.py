"""Risk limits and kill switches per exchange account, and the switch for every account.

Orders of the accounts `a` and `b` are created through the store's create step (the atomic
check the gateway's cache only precedes), the switches and limits set through AdminService.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
from decimal import Decimal
from typing import Any, cast

import fakeredis
import grpc
import pytest
from dramatiq import Message

from order_execution.cli.risk import add_risk_commands, run_risk_command
from order_execution.gateway.auth import API_KEY_HEADER
from order_execution.gateway.health import HealthChecks
from order_execution.orders.cancel_open import CancelOpenState
from order_execution.orders.errors import InvalidOrder, RiskLimitExceeded
from order_execution.orders.model import Order, OrderState, OrderType, Side, now_ms
from order_execution.orders.risk_state import RiskCheck, RiskState, TradingMode
from order_execution.orders.store import OrderStore
from order_execution.proto import admin_pb2 as apb
from order_execution.runtime.settings import ApiClientSettings, AuthSettings, RiskSettings, Settings
from order_execution.runtime.settings_access import hash_key
from order_execution.runtime.settings_accounts import AccountSettings
from order_execution.service_layer.kill_switch import LISTENER_ACTION, finish_overdue_cancel_open
from order_execution.tasks.messages import cancel_order_push
from order_execution.tasks.queues import messages_key, queue_for, queue_key
from tests.factories import BTC_RULES, make_order
from tests.unit.risk_harness import Replica, risk_replica, set_marks

ACCOUNTS = ("a", "b")
S = OrderState
_serial = iter(range(1_000_000))


def order(account: str, *, side: Side = Side.BUY, quantity: str = "0.002", **changes: Any) -> Order:
    n = next(_serial)
    return make_order(
        order_id=f"o{n}",
        client_order_id=f"oe-{n}",
        account=account,
        side=side,
        quantity=Decimal(quantity),
        created_at=now_ms() + n,  # today (UTC): the per-day counter counts it
        **changes,
    )


async def create(gw: Replica, new: Order) -> Order:
    """Create `new` as the gateway does: the gate's checks, then the store's atomic create step."""
    checked = await gw.gate.check(new, BTC_RULES)
    return (await gw.store.create(new, risk=checked)).order


async def refused(store: OrderStore, new: Order, risk: RiskCheck | None = None) -> str:
    with pytest.raises(RiskLimitExceeded) as caught:
        await store.create(new, risk=risk or RiskCheck())
    assert await store.get_many([new.order_id]) == []  # nothing stored
    return str(caught.value)


def switch(mode: apb.TradingMode.ValueType, account: str = "", **extra: Any) -> apb.SetTradingModeRequest:
    return apb.SetTradingModeRequest(mode=mode, account=account, reason="test", **extra)


async def cancels_queued(client: Any, account: str) -> list[str]:
    """Order ids of the cancel messages waiting on `account`'s BTCUSDT queue."""
    queue = queue_for("BTCUSDT", account)
    ids = await client.lrange(queue_key(queue), 0, -1)
    messages = [Message.decode(await client.hget(messages_key(queue), i)) for i in ids]
    return [str(m.kwargs["order_id"]) for m in messages if m.actor_name == "cancel_order"]


async def test_limits_are_per_account_with_the_settings_as_every_accounts_default(
    fake_redis: fakeredis.FakeAsyncRedis,
) -> None:
    defaults = RiskSettings(allowed_symbols=["BTCUSDT"], max_order_notional=Decimal(1000))
    async with risk_replica(fake_redis, defaults, accounts=ACCOUNTS) as gw:
        changed = apb.RiskLimits(max_open_orders=1, max_order_notional="200")
        reply = await gw.admin.SetRiskLimits(
            apb.SetRiskLimitsRequest(
                limits=changed, fields=["max_open_orders", "max_order_notional"], account="b"
            ),
            timeout=5,
        )
        assert (reply.max_open_orders, reply.max_order_notional) == (1, "200")
        a = await gw.admin.GetRiskLimits(apb.GetRiskLimitsRequest(account="a"), timeout=5)
        first = await gw.admin.GetRiskLimits(apb.GetRiskLimitsRequest(), timeout=5)  # the first account
        assert a == first and (a.max_open_orders, a.max_order_notional) == (0, "1000")

        await create(gw, order("a"))
        await create(gw, order("a"))  # a keeps the defaults: no open-order limit
        await create(gw, order("b"))
        with pytest.raises(RiskLimitExceeded, match=r"above the allowance 1 \(risk\.max_open_orders\)"):
            await create(gw, order("b"))
        # The gate checks b's notional limit (0.005 x mark 50000 = 250 > 200) and not a's (1000).
        await set_marks(fake_redis, BTCUSDT="50000")
        with pytest.raises(RiskLimitExceeded, match="250 exceeds the allowance 200"):
            await gw.gate.check(order("b", quantity="0.005", type=OrderType.MARKET, price=None), BTC_RULES)
        await gw.gate.check(order("a", quantity="0.005", type=OrderType.MARKET, price=None), BTC_RULES)
    assert await RiskState(fake_redis, account="a").open_orders() == 2
    assert await RiskState(fake_redis, account="b").open_orders() == 1
    assert await RiskState(fake_redis, account="b").orders_today() == 1
    assert await RiskState(fake_redis).open_orders() == 0  # the account `default` counted nothing


async def test_an_accounts_halt_refuses_only_its_own_orders(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    store = OrderStore(fake_redis)
    async with risk_replica(fake_redis, accounts=ACCOUNTS) as gw:
        status = await gw.admin.SetTradingMode(switch(apb.HALTED, "a"), timeout=5)
        assert (status.mode, status.account) == (apb.HALTED, "a")
        message = await refused(store, order("a"))
        assert message.startswith("trading_mode: trading is HALTED: no new orders")
        assert "kill switch of account a" in message and "risk show --account a" in message
        await refused(store, order("a", side=Side.SELL, reduce_only=True))  # HALTED takes nothing
        await store.create(order("b"), risk=RiskCheck())
        every = await gw.admin.GetTradingMode(apb.GetTradingModeRequest(), timeout=5)
        assert (every.mode, every.account) == (apb.ACTIVE, "")  # the switch for every account untouched


async def test_an_accounts_reducing_takes_only_its_reducing_orders(
    fake_redis: fakeredis.FakeAsyncRedis,
) -> None:
    store = OrderStore(fake_redis)
    await RiskState(fake_redis, account="a").set_positions({"BTCUSDT": Decimal("0.02")})
    async with risk_replica(fake_redis, accounts=ACCOUNTS) as gw:
        await gw.admin.SetTradingMode(switch(apb.REDUCING, "a"), timeout=5)
        assert "REDUCING: only orders that reduce a position" in await refused(store, order("a"))
        await store.create(order("a", side=Side.SELL, quantity="0.01"), risk=RiskCheck())  # long 0.02 -> 0.01
        await refused(store, order("a", side=Side.SELL, quantity="0.011"))  # with the open 0.01: short
        await store.create(order("b"), risk=RiskCheck())  # b has no position and trades on


async def test_the_switch_for_every_account_refuses_every_accounts_orders(
    fake_redis: fakeredis.FakeAsyncRedis,
) -> None:
    store = OrderStore(fake_redis)
    async with risk_replica(fake_redis, accounts=ACCOUNTS) as gw:
        status = await gw.admin.SetTradingMode(switch(apb.HALTED), timeout=5)
        assert (status.mode, status.account) == (apb.HALTED, "")
        for account in ACCOUNTS:
            message = await refused(store, order(account))
            assert "HALTED: no new orders (the kill switch for every account" in message
            own = await gw.admin.GetTradingMode(apb.GetTradingModeRequest(account=account), timeout=5)
            assert own.mode == apb.ACTIVE  # each account's own switch is left as it was
        # The stricter switch applies: every account REDUCING, b's own HALTED.
        await gw.admin.SetTradingMode(switch(apb.REDUCING), timeout=5)
        await gw.admin.SetTradingMode(switch(apb.HALTED, "b"), timeout=5)
        assert "REDUCING" in await refused(store, order("a"))
        assert "HALTED: no new orders (the kill switch of account b" in await refused(store, order("b"))
        assert gw.gate.mode_for("a").mode is TradingMode.REDUCING and gw.gate.mode_for("a").account is None
        assert gw.gate.mode_for("b").mode is TradingMode.HALTED and gw.gate.mode_for("b").account == "b"
        await gw.admin.SetTradingMode(switch(apb.ACTIVE), timeout=5)
        await store.create(order("a"), risk=RiskCheck())
        await refused(store, order("b"))  # still halted by its own switch


async def test_the_create_step_applies_the_switches_a_stale_cache_has_not_seen(
    fake_redis: fakeredis.FakeAsyncRedis,
) -> None:
    async with risk_replica(fake_redis, accounts=ACCOUNTS) as gw:
        other_replica = RiskState(fake_redis, account="a")  # the switches set elsewhere, not reloaded here
        await other_replica.set_mode(TradingMode.HALTED, actor="ops", reason="elsewhere")
        await other_replica.every_account.set_mode(TradingMode.REDUCING, actor="ops", reason="elsewhere")
        assert gw.gate.mode_for("a").mode is TradingMode.ACTIVE  # stale: reloaded every 0.25 s
        stale = await gw.gate.check(order("a"), BTC_RULES)  # the gate's checks pass
        assert "HALTED" in await refused(gw.store, order("a"), stale)
        assert "REDUCING" in await refused(gw.store, order("b"), stale)
        await gw.gate.load()
        assert gw.gate.mode_for("a").mode is TradingMode.HALTED
        assert gw.gate.mode_for("b").mode is TradingMode.REDUCING


async def test_cancel_open_of_one_account_cancels_only_its_orders(
    fake_redis: fakeredis.FakeAsyncRedis,
) -> None:
    async with risk_replica(fake_redis, accounts=ACCOUNTS) as gw:
        book = {account: [await create(gw, order(account)) for _ in range(3)] for account in ACCOUNTS}
        for account in ACCOUNTS:  # the first of each at the exchange, the others still NEW
            await gw.store.transition(book[account][0].order_id, lambda o: o.replace(state=S.SUBMITTED))
        status = await gw.admin.SetTradingMode(switch(apb.HALTED, "a", cancel_open=True), timeout=5)
        assert status.canceled_orders == 3
        states = {a: [(await gw.store.get(o.order_id)).state for o in book[a]] for a in ACCOUNTS}
        assert states == {"a": [S.PENDING_CANCEL, S.CANCELED, S.CANCELED], "b": [S.SUBMITTED, S.NEW, S.NEW]}
        assert await cancels_queued(fake_redis, "a") == [book["a"][0].order_id]  # on a's own queue
        assert await cancels_queued(fake_redis, "b") == []
        done = await RiskState(fake_redis, account="a").cancel_open()
        assert done is not None and (done.state, done.canceled_orders) == (CancelOpenState.DONE, 3)
        assert await RiskState(fake_redis).every_account.cancel_open() is None

        every = await gw.admin.SetTradingMode(switch(apb.HALTED, cancel_open=True), timeout=5)
        assert every.canceled_orders == 3  # b's three; a's already canceled or being canceled
        assert [(await gw.store.get(o.order_id)).state for o in book["b"]] == [
            S.PENDING_CANCEL,
            S.CANCELED,
            S.CANCELED,
        ]
        assert await cancels_queued(fake_redis, "b") == [book["b"][0].order_id]


async def test_the_listener_finishes_each_switchs_pending_cancel_over_its_own_orders(
    fake_redis: fakeredis.FakeAsyncRedis,
) -> None:
    store = OrderStore(fake_redis)
    book = {}
    for account in ACCOUNTS:
        book[account] = placed = order(account)
        await store.create(placed, risk=RiskCheck())
    listener_state = RiskState(fake_redis)  # the listener's own account need not be one of them
    a = listener_state.for_account("a")
    await a.set_mode(TradingMode.HALTED, actor="ops", reason="a's gateway died", cancel_open=True)

    async def finish() -> int | None:
        return await finish_overdue_cancel_open(
            listener_state, store, cancel_order_push, grace_ms=0, actor="listener l1", accounts=ACCOUNTS
        )

    assert await finish() == 1
    assert (await store.get(book["a"].order_id)).state is S.CANCELED
    assert (await store.get(book["b"].order_id)).state is S.NEW  # b's switch asked for nothing
    done = await a.cancel_open()
    assert done is not None and (done.state, done.done_by) == (CancelOpenState.DONE, "listener l1")
    assert (await a.audit())[0].action == LISTENER_ACTION
    assert await finish() is None  # nothing left pending

    await listener_state.every_account.set_mode(TradingMode.HALTED, actor="ops", reason="", cancel_open=True)
    assert await finish() == 1
    assert (await store.get(book["b"].order_id)).state is S.CANCELED
    every = await listener_state.every_account.cancel_open()
    assert every is not None and every.state is CancelOpenState.DONE


async def test_the_audit_trail_names_the_account_of_each_change(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    async with risk_replica(fake_redis, accounts=ACCOUNTS) as gw:
        await gw.admin.SetTradingMode(switch(apb.HALTED, "a"), timeout=5)
        await gw.admin.SetTradingMode(switch(apb.REDUCING, "b"), timeout=5)
        await gw.admin.SetTradingMode(switch(apb.REDUCING), timeout=5)
        every = await gw.admin.GetTradingMode(apb.GetTradingModeRequest(), timeout=5)
        a = await gw.admin.GetTradingMode(apb.GetTradingModeRequest(account="a"), timeout=5)
    assert [e.action for e in every.audit] == [
        "mode REDUCING",
        "mode REDUCING (account b)",
        "mode HALTED (account a)",
    ]
    assert (a.mode, a.account) == (apb.HALTED, "a")
    assert [e.action for e in a.audit] == ["mode REDUCING (every account)", "mode HALTED"]  # not b's


ADMIN_KEY, B_ADMIN_KEY, TRADER_KEY = (secrets.token_urlsafe(32) for _ in range(3))
AUTH = AuthSettings(
    clients=[
        ApiClientSettings(name="ops", key_sha256=hash_key(ADMIN_KEY), admin=True),
        ApiClientSettings(name="b-ops", key_sha256=hash_key(B_ADMIN_KEY), admin=True, accounts=["b"]),
        ApiClientSettings(name="desk-1", key_sha256=hash_key(TRADER_KEY)),
    ]
)
ADMIN = ((API_KEY_HEADER, ADMIN_KEY),)
B_ADMIN = ((API_KEY_HEADER, B_ADMIN_KEY),)


async def failure(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), caught.value.details() or ""


async def test_admin_calls_name_an_unknown_or_forbidden_account(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    async with risk_replica(fake_redis, accounts=ACCOUNTS, auth=AUTH) as gw:
        admin = gw.admin
        unknown: list[Any] = [
            admin.GetRiskLimits(apb.GetRiskLimitsRequest(account="zz"), metadata=ADMIN, timeout=5),
            admin.SetTradingMode(switch(apb.HALTED, "zz"), metadata=ADMIN, timeout=5),
            admin.GetTradingMode(apb.GetTradingModeRequest(account="zz"), metadata=B_ADMIN, timeout=5),
        ]
        for call in unknown:
            code, details = await failure(call)
            assert code == grpc.StatusCode.INVALID_ARGUMENT
            assert details == "account: 'zz' is not a configured account (a, b)"
        limits_a = apb.SetRiskLimitsRequest(
            limits=apb.RiskLimits(max_open_orders=1), fields=["max_open_orders"], account="a"
        )
        forbidden: list[Any] = [
            admin.GetRiskLimits(apb.GetRiskLimitsRequest(account="a"), metadata=B_ADMIN, timeout=5),
            admin.SetRiskLimits(limits_a, metadata=B_ADMIN, timeout=5),
            admin.SetTradingMode(switch(apb.HALTED, "a"), metadata=B_ADMIN, timeout=5),
            admin.GetTradingMode(apb.GetTradingModeRequest(account="a"), metadata=B_ADMIN, timeout=5),
        ]
        for call in forbidden:
            code, details = await failure(call)
            assert code == grpc.StatusCode.PERMISSION_DENIED
            assert details == "account: client b-ops may not act on account 'a' (its accounts: b)"
        code, details = await failure(admin.SetTradingMode(switch(apb.HALTED), metadata=B_ADMIN, timeout=5))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert details.startswith(
            "account: client b-ops is limited to accounts b and may not set the kill switch for every account"
        )
        assert (await admin.GetTradingMode(apb.GetTradingModeRequest(), metadata=ADMIN, timeout=5)).mode == (
            apb.ACTIVE
        )  # nothing was set

        # What b-ops may do: its own account, the default being its first.
        await admin.SetTradingMode(switch(apb.HALTED, "b"), metadata=B_ADMIN, timeout=5)
        await admin.SetTradingMode(switch(apb.REDUCING, "a"), metadata=ADMIN, timeout=5)
        mine = await admin.SetRiskLimits(
            apb.SetRiskLimitsRequest(limits=apb.RiskLimits(max_open_orders=7), fields=["max_open_orders"]),
            metadata=B_ADMIN,
            timeout=5,
        )
        assert mine.max_open_orders == 7
        assert (await gw.gate.state_for("b").limits(gw.gate.defaults)).max_open_orders == 7
        assert (await gw.gate.state_for("a").limits(gw.gate.defaults)).max_open_orders == 0
        # It reads the switch for every account, with the changes of its accounts only.
        every = await admin.GetTradingMode(apb.GetTradingModeRequest(), metadata=B_ADMIN, timeout=5)
        assert [(e.actor, e.action) for e in every.audit] == [
            ("b-ops", "limits max_open_orders=7 (account b)"),
            ("b-ops", "mode HALTED (account b)"),
        ]


async def test_the_gate_refuses_an_order_of_an_account_it_does_not_serve(
    fake_redis: fakeredis.FakeAsyncRedis,
) -> None:
    async with risk_replica(fake_redis, accounts=ACCOUNTS) as gw:
        with pytest.raises(InvalidOrder, match="account: 'zz' is not a configured account"):
            await gw.gate.check(order("zz"), BTC_RULES)


async def test_mark_prices_are_shared_and_everything_else_is_the_accounts_own(
    fake_redis: fakeredis.FakeAsyncRedis,
) -> None:
    default, b = RiskState(fake_redis), RiskState(fake_redis, account="b")
    await b.save_marks({"BTCUSDT": Decimal(50000)}, time_ms=1)
    assert (await default.marks())["BTCUSDT"].price == Decimal(50000)  # the venue's price
    assert b.keys.marks == default.keys.marks == "oe:risk:marks"
    assert b.keys.all_mode == default.keys.all_mode == "oe:risk:all:mode"
    assert (b.keys.mode, default.keys.mode) == ("oe:@b:risk:mode", "oe:risk:mode")
    await b.set_positions({"BTCUSDT": Decimal(1)})
    assert await default.positions() == {}


def two_accounts() -> Settings:
    return Settings(
        accounts=[
            AccountSettings(name=name, api_key=f"key-{name}", secret_key=f"secret-{name}")
            for name in ACCOUNTS
        ]
    )


def risk_cli(settings: Settings, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_risk_commands(parser)
    return run_risk_command(parser.parse_args(list(argv)), settings)


async def test_the_cli_acts_on_every_account_unless_told_an_account(
    fake_redis: fakeredis.FakeAsyncRedis, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = two_accounts()
    async with risk_replica(fake_redis, accounts=ACCOUNTS) as gw:

        async def cli(*argv: str) -> str:
            assert await asyncio.to_thread(risk_cli, settings, *argv, "--target", gw.target) == 0
            return capsys.readouterr().out

        out = await cli("halt", "--account", "a", "--cancel-open", "--reason", "a's desk")
        assert out.splitlines()[0] == "switch: account a"
        assert "trading: HALTED since" in out and "0 open orders of account a canceled" in out
        out = await cli("reduce", "--reason", "market-wide")
        assert "switch: every account (--account NAME for one account's own)" in out
        assert "trading: REDUCING since" in out
        assert (
            "account a: HALTED since" in out and "risk resume --account a" in out
        )  # still halted by its own
        out = await cli("show", "--account", "b")
        assert "switch: account b" in out and "trading: ACTIVE (never switched)" in out
        assert "effective: REDUCING since" in out and "(the switch for every account)" in out
        assert "limits of account b:" in out
        out = await cli("set", "max_open_orders=4", "--account", "b")
        assert "limits of account b:" in out and "max_open_orders: 4" in out
        shown = json.loads(await cli("show", "--json"))
        assert shown["trading"]["mode"] == "REDUCING" and shown["trading"]["account"] == ""
        assert {name: own["mode"] for name, own in shown["accounts"].items()} == {
            "a": "HALTED",
            "b": "ACTIVE",
        }
    assert gw.gate.limits_for("b").max_open_orders == 4 and gw.gate.limits_for("a").max_open_orders == 0
    assert (await RiskState(fake_redis, account="b").mode()).mode is TradingMode.ACTIVE


async def test_health_names_every_switch_that_is_not_active(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    state = RiskState(fake_redis)
    checks = HealthChecks(
        two_accounts(), OrderStore(fake_redis), cast(Any, None), cast(Any, None), risk=state
    )
    assert (await checks.all())["trading"]["status"] == "healthy"
    await state.for_account("b").set_mode(
        TradingMode.HALTED, actor="ops", reason="b's key leaked", cancel_open=True
    )
    await state.every_account.set_mode(TradingMode.REDUCING, actor="ops", reason="volatile")
    trading = (await checks.all())["trading"]
    await checks.close()
    assert trading["status"] == "unhealthy"
    message = str(trading["message"])
    assert message.startswith("REDUCING (every account): set by ops at ")
    assert (
        "; HALTED (account b): set by ops" in message
        and "b's key leaked, cancel of its open orders pending" in message
    )
    assert "account a" not in message


async def test_an_accounts_audit_is_found_behind_many_changes_of_another(
    fake_redis: fakeredis.FakeAsyncRedis,
) -> None:
    a, b = RiskState(fake_redis, account="a"), RiskState(fake_redis, account="b")
    await a.set_mode(TradingMode.HALTED, actor="ops", reason="old")
    for n in range(450):  # more than a page of b's changes since
        await b.set_mode(TradingMode.REDUCING if n % 2 else TradingMode.ACTIVE, actor="bot", reason=str(n))
    assert [(e.action, e.account) for e in await a.audit(5)] == [("mode HALTED", "a")]
    newest = await b.audit_of(3)
    assert [e.reason for e in newest] == ["449", "448", "447"]
