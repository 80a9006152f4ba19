"""Pre-trade risk over a real gRPC socket: each limit at, just under and just over its allowance."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import fakeredis
import grpc
import pytest

from order_execution.cli.main import main
from order_execution.gateway.commands import AmendOrder, Requester
from order_execution.orders import metrics
from order_execution.orders.errors import RiskLimitExceeded
from order_execution.orders.model import OrderState
from order_execution.orders.risk_state import RiskState, TradingMode
from order_execution.proto import admin_pb2 as apb
from order_execution.proto import order_pb2 as pb
from order_execution.runtime.settings import RiskSettings
from tests.unit.risk_harness import Replica, risk_replica, set_marks

ALLOWED = ["BTCUSDT", "ETHUSDT"]


def limit_buy(
    quantity: str, price: str = "50000", side: pb.OrderSide.ValueType = pb.BUY, **extra: Any
) -> pb.CreateOrderRequest:
    return pb.CreateOrderRequest(
        symbol="BTCUSDT",
        side=side,
        type=pb.LIMIT,
        quantity=quantity,
        price=price,
        time_in_force=pb.GTC,
        **extra,
    )


def market(quantity: str, side: pb.OrderSide.ValueType = pb.BUY, **extra: Any) -> pb.CreateOrderRequest:
    return pb.CreateOrderRequest(symbol="BTCUSDT", side=side, type=pb.MARKET, quantity=quantity, **extra)


async def refused(replica: Replica, request: pb.CreateOrderRequest) -> str:
    """The FAILED_PRECONDITION message CreateOrder answers with (fails the test on anything else)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await replica.orders.CreateOrder(request, timeout=5)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION, caught.value.details()
    return caught.value.details() or ""


async def amend_order(replica: Replica, order_id: str, price: str, quantity: str) -> None:
    """AmendOrder through the replica's intake, as the servicer hands it on (auth off)."""
    await replica.intake.handle(AmendOrder(order_id, price=price, quantity=quantity), Requester())


def refusals(limit: str) -> float:
    value = metrics.RISK_REFUSALS.labels(limit)._value.get()
    return float(value)


async def test_max_order_notional_limit_orders(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    limits = RiskSettings(allowed_symbols=ALLOWED, max_order_notional=Decimal(1000))
    async with risk_replica(fake_redis, limits) as gw:
        await gw.orders.CreateOrder(limit_buy("0.019"), timeout=5)  # 950: under
        await gw.orders.CreateOrder(limit_buy("0.02"), timeout=5)  # 1000: at
        before = refusals("max_order_notional")
        message = await refused(gw, limit_buy("0.021"))  # 1050: over
        assert "1050" in message and "1000" in message and "risk.max_order_notional" in message
        assert refusals("max_order_notional") == before + 1


async def test_max_order_notional_prices_market_orders_at_the_mark(
    fake_redis: fakeredis.FakeAsyncRedis,
) -> None:
    limits = RiskSettings(allowed_symbols=ALLOWED, max_order_notional=Decimal(1000))
    await set_marks(fake_redis, BTCUSDT="50000")
    async with risk_replica(fake_redis, limits) as gw:
        await gw.orders.CreateOrder(market("0.019"), timeout=5)
        await gw.orders.CreateOrder(market("0.02"), timeout=5)
        message = await refused(gw, market("0.021"))
        assert "mark price 50000 = 1050" in message and "allowance 1000" in message
        assert "exceeds" in await refused(gw, market("120"))  # the 120 BTC market order


async def test_a_market_order_without_a_fresh_mark_price_is_refused(
    fake_redis: fakeredis.FakeAsyncRedis,
) -> None:
    limits = RiskSettings(allowed_symbols=ALLOWED, mark_price_max_age_ms=5000)
    async with risk_replica(fake_redis, limits) as gw:
        assert "no mark price of BTCUSDT" in await refused(gw, market("0.002"))
        await set_marks(fake_redis, age_ms=10_000, BTCUSDT="50000")  # older than 5000 ms
        before = refusals("mark_price")
        assert "younger than 5000 ms" in await refused(gw, market("0.002"))
        assert refusals("mark_price") == before + 1
        await set_marks(fake_redis, BTCUSDT="50000")
        await gw.orders.CreateOrder(market("0.002"), timeout=5)


async def test_max_open_orders_counts_until_an_order_ends(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    async with risk_replica(fake_redis, RiskSettings(allowed_symbols=ALLOWED, max_open_orders=2)) as gw:
        first = await gw.orders.CreateOrder(limit_buy("0.002"), timeout=5)  # 1: under
        await gw.orders.CreateOrder(limit_buy("0.002"), timeout=5)  # 2: at
        message = await refused(gw, limit_buy("0.002"))  # 3: over
        assert message == (
            "max_open_orders: this order would make 3 open orders, above the allowance 2 "
            "(risk.max_open_orders)"
        )
        await gw.orders.CancelOrder(pb.CancelOrderRequest(order_id=first.order_id), timeout=5)
        await gw.orders.CreateOrder(limit_buy("0.002"), timeout=5)  # the canceled one freed its place
        assert await RiskState(fake_redis).open_orders() == 2


async def test_max_orders_per_day_counts_ended_orders_too(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    async with risk_replica(fake_redis, RiskSettings(allowed_symbols=ALLOWED, max_orders_per_day=2)) as gw:
        first = await gw.orders.CreateOrder(limit_buy("0.002"), timeout=5)
        await gw.orders.CreateOrder(limit_buy("0.002"), timeout=5)
        await gw.orders.CancelOrder(pb.CancelOrderRequest(order_id=first.order_id), timeout=5)
        message = await refused(gw, limit_buy("0.002"))
        assert "3 orders today (UTC), above the allowance 2 (risk.max_orders_per_day)" in message
        assert await RiskState(fake_redis).orders_today() == 2


async def test_an_idempotent_retry_is_not_counted_again(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    async with risk_replica(fake_redis, RiskSettings(allowed_symbols=ALLOWED, max_orders_per_day=1)) as gw:
        await gw.orders.CreateOrder(limit_buy("0.002", client_order_id="once"), timeout=5)
        again = await gw.orders.CreateOrder(limit_buy("0.002", client_order_id="once"), timeout=5)
        assert again.duplicate
        await refused(gw, limit_buy("0.002", client_order_id="twice"))


async def test_a_retry_of_a_stored_order_is_answered_even_if_the_market_moved(
    fake_redis: fakeredis.FakeAsyncRedis,
) -> None:
    """The first answer was lost (say the gateway died after storing it); by the retry the mark has
    moved out of the price band. The retry gets the stored order back, not a refusal: the order exists
    and will execute, so refusing it would invite the client to place it again under a new id."""
    limits = RiskSettings(allowed_symbols=ALLOWED, price_band_percent=Decimal(1))
    await set_marks(fake_redis, BTCUSDT="50000")
    async with risk_replica(fake_redis, limits) as gw:
        first = await gw.orders.CreateOrder(limit_buy("0.002", client_order_id="lost-answer"), timeout=5)
        await set_marks(fake_redis, BTCUSDT="45000")
        await gw.gate.load()
        retry = await gw.orders.CreateOrder(limit_buy("0.002", client_order_id="lost-answer"), timeout=5)
        assert retry.duplicate and retry.order_id == first.order_id
        assert "risk.price_band_percent" in await refused(gw, limit_buy("0.002", client_order_id="new"))


async def test_max_position_counts_the_position_and_open_orders_on_the_same_side(
    fake_redis: fakeredis.FakeAsyncRedis,
) -> None:
    limits = RiskSettings(allowed_symbols=ALLOWED, max_position_quantity={"BTCUSDT": Decimal("0.05")})
    await RiskState(fake_redis).set_positions({"BTCUSDT": Decimal("0.02")})  # long 0.02
    async with risk_replica(fake_redis, limits) as gw:
        await gw.orders.CreateOrder(limit_buy("0.02"), timeout=5)  # 0.04: under
        await gw.orders.CreateOrder(limit_buy("0.01"), timeout=5)  # 0.05: at
        message = await refused(gw, limit_buy("0.002"))  # 0.052: over
        assert message == (
            "quantity: BTCUSDT position with open BUY orders would reach 0.052, above the allowance 0.05 "
            "(risk.max_position_quantity)"
        )
        # Selling: the long position offsets the short side: -0.02 + 0.07 = 0.05 at the allowance.
        await gw.orders.CreateOrder(limit_buy("0.07", side=pb.SELL), timeout=5)
        assert "would reach 0.052" in await refused(gw, limit_buy("0.002", side=pb.SELL))
        # A reduce-only order that shrinks the position passes the position limit.
        await gw.orders.CreateOrder(limit_buy("0.01", side=pb.SELL, reduce_only=True), timeout=5)
        # ETHUSDT has no position limit.
        await gw.orders.CreateOrder(
            pb.CreateOrderRequest(
                symbol="ETHUSDT",
                side=pb.BUY,
                type=pb.LIMIT,
                quantity="100",
                price="3000",
                time_in_force=pb.GTC,
            ),
            timeout=5,
        )


async def test_reduce_only_that_would_grow_a_position_is_still_limited(
    fake_redis: fakeredis.FakeAsyncRedis,
) -> None:
    limits = RiskSettings(allowed_symbols=ALLOWED, max_position_quantity={"BTCUSDT": Decimal("0.01")})
    await RiskState(fake_redis).set_positions({"BTCUSDT": Decimal("0.01")})
    async with risk_replica(fake_redis, limits) as gw:
        await refused(gw, limit_buy("0.002", reduce_only=True))  # a BUY does not shrink a long


async def test_allowed_symbols_refuse_and_change_at_runtime(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    async with risk_replica(fake_redis, RiskSettings(allowed_symbols=["BTCUSDT"])) as gw:
        eth = pb.CreateOrderRequest(
            symbol="ETHUSDT", side=pb.BUY, type=pb.LIMIT, quantity="0.01", price="3000", time_in_force=pb.GTC
        )
        message = await refused(gw, eth)
        assert "ETHUSDT is not traded here (allowed: BTCUSDT; risk.allowed_symbols)" in message
        await gw.admin.SetRiskLimits(
            apb.SetRiskLimitsRequest(
                limits=apb.RiskLimits(allowed_symbols=["BTCUSDT", "ETHUSDT"]), fields=["allowed_symbols"]
            ),
            timeout=5,
        )
        await gw.orders.CreateOrder(eth, timeout=5)


async def test_price_band_around_the_mark(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    limits = RiskSettings(allowed_symbols=ALLOWED, price_band_percent=Decimal(1))
    await set_marks(fake_redis, BTCUSDT="50000")
    async with risk_replica(fake_redis, limits) as gw:
        await gw.orders.CreateOrder(limit_buy("0.002", "50499.9"), timeout=5)  # under 1 %
        await gw.orders.CreateOrder(limit_buy("0.002", "50500"), timeout=5)  # at 1 %
        message = await refused(gw, limit_buy("0.002", "50500.1"))  # over
        assert "50500.1 is 1% from the mark price 50000, outside the allowance 1%" in message
        await gw.orders.CreateOrder(limit_buy("0.003", "49500", side=pb.SELL), timeout=5)
        assert "risk.price_band_percent" in await refused(gw, limit_buy("0.003", "49499.9", side=pb.SELL))


async def test_price_band_without_a_mark_is_refused(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    limits = RiskSettings(allowed_symbols=ALLOWED, price_band_percent=Decimal(1))
    async with risk_replica(fake_redis, limits) as gw:
        assert "risk.price_band_percent" in await refused(gw, limit_buy("0.002"))


async def test_percent_price_filter_is_checked_at_the_gateway(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    await set_marks(fake_redis, BTCUSDT="50000")
    async with risk_replica(fake_redis) as gw:
        await gw.orders.CreateOrder(limit_buy("0.002", "52499.9"), timeout=5)
        await gw.orders.CreateOrder(limit_buy("0.002", "52500"), timeout=5)  # 50000 x 1.05
        before = refusals("percent_price")
        message = await refused(gw, limit_buy("0.002", "52500.1"))
        assert message == (
            "price: BUY at 52500.1 is above mark 50000 x multiplierUp 1.05 = 52500 (exchange PERCENT_PRICE)"
        )
        assert refusals("percent_price") == before + 1
        await gw.orders.CreateOrder(limit_buy("0.003", "47500", side=pb.SELL), timeout=5)  # x 0.95
        assert "multiplierDown 0.95" in await refused(gw, limit_buy("0.003", "47499.9", side=pb.SELL))


async def test_percent_price_without_a_mark_is_left_to_the_exchange(
    fake_redis: fakeredis.FakeAsyncRedis,
) -> None:
    async with risk_replica(fake_redis) as gw:
        await gw.orders.CreateOrder(limit_buy("0.002", "60000"), timeout=5)


async def test_two_gateways_race_for_the_last_open_order(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    limits = RiskSettings(allowed_symbols=ALLOWED, max_open_orders=5)
    async with risk_replica(fake_redis, limits) as one, risk_replica(fake_redis, limits) as two:
        for _ in range(4):
            await one.orders.CreateOrder(limit_buy("0.002"), timeout=5)
        calls = [gw.orders.CreateOrder(limit_buy("0.002"), timeout=5) for gw in (one, two) * 5]
        results = await asyncio.gather(*calls, return_exceptions=True)
    passed = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(passed) == 1 and len(failed) == 9
    assert all(r.code() == grpc.StatusCode.FAILED_PRECONDITION for r in failed)
    assert await RiskState(fake_redis).open_orders() == 5


async def test_two_gateways_race_for_the_last_unit_of_a_position(
    fake_redis: fakeredis.FakeAsyncRedis,
) -> None:
    limits = RiskSettings(allowed_symbols=ALLOWED, max_position_quantity={"BTCUSDT": Decimal("0.01")})
    async with risk_replica(fake_redis, limits) as one, risk_replica(fake_redis, limits) as two:
        results = await asyncio.gather(
            *(gw.orders.CreateOrder(limit_buy("0.01"), timeout=5) for gw in (one, two, one, two)),
            return_exceptions=True,
        )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert await RiskState(fake_redis).open_quantities() == {"BTCUSDT:BUY": Decimal("0.01")}


async def test_limits_set_on_one_replica_reach_the_other(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    async with risk_replica(fake_redis) as one, risk_replica(fake_redis) as two:
        await one.admin.SetRiskLimits(
            apb.SetRiskLimitsRequest(
                limits=apb.RiskLimits(max_open_orders=1), fields=["max_open_orders"], reason="test"
            ),
            timeout=5,
        )
        await two.orders.CreateOrder(limit_buy("0.002"), timeout=5)
        # The count is checked where the order is stored, with the limit the replica last loaded.
        await two.gate.load()
        await refused(two, limit_buy("0.002"))
        got = await two.admin.GetRiskLimits(apb.GetRiskLimitsRequest(), timeout=5)
        assert got.max_open_orders == 1 and got.max_order_notional == "1000000"


async def test_set_risk_limits_names_a_bad_field_or_value(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    async with risk_replica(fake_redis) as gw:
        for request, text in (
            (apb.SetRiskLimitsRequest(), "fields: name at least one limit"),
            (apb.SetRiskLimitsRequest(fields=["max_leverage"]), "'max_leverage' is not a risk limit"),
            (
                apb.SetRiskLimitsRequest(
                    limits=apb.RiskLimits(max_open_orders=-1), fields=["max_open_orders"]
                ),
                "max_open_orders: Input should be greater than or equal to 0",
            ),
            (
                apb.SetRiskLimitsRequest(
                    limits=apb.RiskLimits(max_order_notional="1e5"), fields=["max_order_notional"]
                ),
                "max_order_notional: must be a plain decimal string",
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await gw.admin.SetRiskLimits(request, timeout=5)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert text in (caught.value.details() or "")
        assert await RiskState(fake_redis).audit() == []


async def test_a_stop_market_order_is_priced_at_its_trigger(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    limits = RiskSettings(allowed_symbols=ALLOWED, max_order_notional=Decimal(1000))

    def stop(quantity: str) -> pb.CreateOrderRequest:
        return pb.CreateOrderRequest(
            symbol="BTCUSDT", side=pb.BUY, type=pb.STOP_MARKET, quantity=quantity, trigger_price="51000"
        )

    async with risk_replica(fake_redis, limits) as gw:
        await gw.orders.CreateOrder(stop("0.019"), timeout=5)  # 969
        message = await refused(gw, stop("0.02"))  # 1020
        assert "price x quantity = 1020 exceeds 1000 (risk.max_order_notional)" in message


async def test_the_cli_sets_and_shows_limits(
    fake_redis: fakeredis.FakeAsyncRedis, capsys: pytest.CaptureFixture[str]
) -> None:
    async with risk_replica(fake_redis) as gw:
        target = gw.target
        change = ["risk", "set", "max_open_orders=3", "max_position_quantity=BTCUSDT:2", "--reason", "desk"]
        assert await asyncio.to_thread(main, [*change, "--target", target]) == 0
        assert "max_open_orders: 3" in capsys.readouterr().out
        assert await asyncio.to_thread(main, ["risk", "show", "--target", target]) == 0
        shown = capsys.readouterr().out
        assert "trading: ACTIVE (never switched)" in shown
        assert "max_position_quantity: {'BTCUSDT': '2'}" in shown
        assert 'anonymous  limits max_open_orders=3, max_position_quantity={"BTCUSDT": "2"}: desk' in shown
        assert await asyncio.to_thread(main, ["risk", "set", "max_open_orders=x", "--target", target]) == 1
        assert "expected a whole number" in capsys.readouterr().err
        assert gw.gate.limits_for("default").max_open_orders == 3


async def test_an_amend_meets_the_limits_a_new_order_would(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    limits = RiskSettings(
        allowed_symbols=ALLOWED, price_band_percent=Decimal(1), max_order_notional=Decimal(1000)
    )
    await set_marks(fake_redis, BTCUSDT="50000")
    async with risk_replica(fake_redis, limits) as gw:
        created = await gw.orders.CreateOrder(limit_buy("0.01"), timeout=5)
        await gw.store.transition(created.order_id, lambda o: o.replace(state=OrderState.SUBMITTED))

        async def amend_refused(price: str = "", quantity: str = "") -> str:
            before = (await gw.store.get(created.order_id)).version
            with pytest.raises(RiskLimitExceeded) as caught:
                await amend_order(gw, created.order_id, price, quantity)
            assert (await gw.store.get(created.order_id)).version == before  # nothing queued or stored
            return str(caught.value)

        assert "risk.price_band_percent" in await amend_refused(price="50500.1")
        assert "risk.max_order_notional" in await amend_refused(quantity="0.021")
        await amend_order(gw, created.order_id, "50400", "")  # inside the band: queued

        await RiskState(fake_redis).set_mode(TradingMode.HALTED, actor="test", reason="incident")
        await gw.gate.load()
        assert "may not add quantity" in await amend_refused(quantity="0.015")
        await amend_order(gw, created.order_id, "", "0.005")  # less exposure is still allowed
