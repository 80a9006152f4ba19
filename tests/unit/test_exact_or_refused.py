"""Exact or refused, case by case: the issue's 40-digit price, each rule fed digits past 28, and
the same price through the gateway over gRPC (nothing stored; a long on-tick price retried is
the same order, not ALREADY_EXISTS). The property tests are in test_decimal_exactness.py."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import grpc
import pytest

from order_execution.orders.errors import InvalidOrder
from order_execution.orders.exact import is_multiple, product
from order_execution.proto import order_pb2 as pb
from tests.factories import outbox_orders
from tests.unit.gateway_harness import validated_order
from tests.unit.test_decimal_exactness import (
    OFF_TICK_40,
    ON_TICK_40,
    RISK,
    RULES,
    request,
    sent_params,
    stored,
)


async def test_the_40_digit_price_is_refused_over_grpc_and_nothing_is_stored(gateway: Any) -> None:
    stub, redis = gateway
    before = sorted(await redis.keys("*"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateOrder(request(quantity="0.002", price=OFF_TICK_40, client_order_id="exact-1"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("price: must be a multiple of tick size 0.1")
    assert sorted(await redis.keys("*")) == before  # no order, no queue message
    assert await outbox_orders(redis) == []
    # The same request again: refused the same way, not ALREADY_EXISTS (nothing was stored).
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await stub.CreateOrder(request(quantity="0.002", price=OFF_TICK_40, client_order_id="exact-1"))
    assert again.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_long_on_tick_price_retried_is_the_same_order(gateway: Any) -> None:
    stub, redis = gateway
    first = await stub.CreateOrder(request(quantity="0.002", price=ON_TICK_40, client_order_id="exact-2"))
    retry = await stub.CreateOrder(request(quantity="0.002", price=ON_TICK_40, client_order_id="exact-2"))
    assert retry.order_id == first.order_id
    assert Decimal(first.order.price) == Decimal(ON_TICK_40)
    [queued] = await outbox_orders(redis)
    assert queued.price == Decimal(50000)


def test_the_40_digit_price_of_the_issue_is_refused_naming_price() -> None:
    price = OFF_TICK_40
    assert len(price) == 40
    with pytest.raises(InvalidOrder) as refused:
        validated_order(request(quantity="0.002", price=price), RULES, RISK)
    assert refused.value.field == "price" and "tick size 0.1" in str(refused.value)


def test_long_digits_are_checked_not_rounded_by_every_rule() -> None:
    """Each rule that used the default 28-digit context, fed a value one unit in the 34th-37th place off."""
    with pytest.raises(InvalidOrder, match=re.escape("quantity: must be a multiple of step size 0.001")):
        validated_order(request(quantity="0.2000000000000000000000000000000001"), RULES, RISK)
    with pytest.raises(InvalidOrder, match=re.escape("trigger_price: must be a multiple of tick size 0.1")):
        validated_order(
            request(
                type=pb.STOP_MARKET,
                price="",
                time_in_force=pb.TIF_UNSPECIFIED,
                trigger_price="60000.000000000000000000000000000000001",
            ),
            RULES,
            RISK,
        )
    with pytest.raises(InvalidOrder, match=re.escape("callback_rate: must be 0.1-10 in steps of 0.1")):
        validated_order(
            request(
                type=pb.TRAILING_STOP_MARKET,
                price="",
                time_in_force=pb.TIF_UNSPECIFIED,
                callback_rate="1.0000000000000000000000000000000000001",
            ),
            RULES,
            RISK,
        )
    twenty_digits = Decimal("12345678901234567891")
    assert product("quantity", twenty_digits, twenty_digits) == Decimal(12345678901234567891**2)


def test_arithmetic_that_cannot_be_exact_is_refused_naming_the_field() -> None:
    """Past EXACT's 200 digits the trap fires: an error naming the field, never a rounded result."""
    huge, tiny = Decimal("1E+150"), Decimal("1E-150")
    with pytest.raises(InvalidOrder, match=r"^price: cannot be checked exactly"):
        is_multiple("price", huge, tiny)
    with pytest.raises(InvalidOrder, match=r"^quantity: cannot be checked exactly"):
        product("quantity", Decimal("1" * 150), Decimal("1" * 150))


def test_a_long_on_tick_price_is_accepted_and_stored_as_asked() -> None:
    """Trailing zeros past 28 digits are not an error: the value is exact, and a retry compares equal."""
    price = ON_TICK_40
    assert len(price) == 40
    order = validated_order(request(price=price), RULES, RISK)
    assert stored(order).price == Decimal(50000) and sent_params(order)["price"] == "50000"
