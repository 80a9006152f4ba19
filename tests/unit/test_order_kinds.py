"""Conditional order kinds at the gateway: each kind's fields and rules, errors naming the field."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from order_execution.orders.errors import InvalidOrder, RiskLimitExceeded
from order_execution.orders.model import OrderType, TimeInForce, WorkingType
from order_execution.proto import order_pb2 as pb
from order_execution.runtime.settings import RiskSettings
from tests.factories import BTC_RULES
from tests.unit.gateway_harness import validated_order

RULES = {"BTCUSDT": BTC_RULES}
RISK = RiskSettings(allowed_symbols=["BTCUSDT"], max_order_notional=Decimal(200_000))

BASE: dict[pb.OrderType.ValueType, dict[str, Any]] = {
    pb.STOP_MARKET: {"trigger_price": "49000"},
    pb.TAKE_PROFIT_MARKET: {"trigger_price": "52000"},
    pb.STOP: {"trigger_price": "49000", "price": "48900"},
    pb.TAKE_PROFIT: {"trigger_price": "52000", "price": "52100"},
    pb.TRAILING_STOP_MARKET: {"callback_rate": "1.5"},
}


def request(kind: pb.OrderType.ValueType, **changes: Any) -> pb.CreateOrderRequest:
    fields: dict[str, Any] = {"symbol": "BTCUSDT", "side": pb.SELL, "type": kind, "quantity": "0.010"}
    fields.update(BASE[kind])
    fields.update(changes)
    return pb.CreateOrderRequest(**fields)


def rejection(req: pb.CreateOrderRequest) -> InvalidOrder:
    with pytest.raises(InvalidOrder) as caught:
        validated_order(req, RULES, RISK)
    return caught.value


@pytest.mark.parametrize("kind", list(BASE))
def test_each_kind_builds_its_order(kind: pb.OrderType.ValueType) -> None:
    order = validated_order(request(kind, working_type=pb.MARK_PRICE, price_protect=True), RULES, RISK)
    assert order.type is OrderType(pb.OrderType.Name(kind)) and order.type.is_conditional
    assert order.working_type is WorkingType.MARK_PRICE and order.price_protect
    assert order.quantity == Decimal("0.010")


def test_stop_market_keeps_its_trigger_and_takes_no_limit_terms() -> None:
    order = validated_order(request(pb.STOP_MARKET), RULES, RISK)
    assert order.trigger_price == Decimal("49000") and order.price is None and order.time_in_force is None
    assert order.working_type is None  # the exchange's default, CONTRACT_PRICE


def test_stop_limit_defaults_to_gtc() -> None:
    order = validated_order(request(pb.STOP), RULES, RISK)
    assert order.price == Decimal("48900") and order.time_in_force is TimeInForce.GTC
    ioc = validated_order(request(pb.STOP, time_in_force=pb.IOC), RULES, RISK)
    assert ioc.time_in_force is TimeInForce.IOC


def test_trailing_stop_takes_callback_and_optional_activation() -> None:
    order = validated_order(request(pb.TRAILING_STOP_MARKET, activation_price="51000"), RULES, RISK)
    assert order.callback_rate == Decimal("1.5") and order.activation_price == Decimal("51000")
    assert order.trigger_price is None


def test_close_position_takes_no_quantity() -> None:
    order = validated_order(request(pb.STOP_MARKET, quantity="", close_position=True), RULES, RISK)
    assert order.close_position and order.quantity == 0


@pytest.mark.parametrize(
    ("kind", "changes", "field", "rule"),
    [
        (pb.STOP_MARKET, {"trigger_price": ""}, "trigger_price", "is required for STOP_MARKET"),
        (pb.STOP, {"trigger_price": ""}, "trigger_price", "is required for STOP"),
        (pb.STOP_MARKET, {"trigger_price": "49000.05"}, "trigger_price", "tick size"),
        (pb.STOP_MARKET, {"trigger_price": "-1"}, "trigger_price", "plain decimal"),
        (pb.STOP_MARKET, {"price": "49000"}, "price", "must be empty for STOP_MARKET"),
        (pb.TAKE_PROFIT_MARKET, {"time_in_force": pb.GTC}, "time_in_force", "must be unset"),
        (pb.STOP, {"price": ""}, "price", "is required for STOP"),
        (pb.TAKE_PROFIT, {"price": "52100.01"}, "price", "tick size"),
        (pb.TAKE_PROFIT, {"time_in_force": 99}, "time_in_force", "unknown value 99"),
        (pb.STOP, {"post_only": True}, "post_only", "LIMIT orders only"),
        (pb.STOP_MARKET, {"quantity": "0.0105"}, "quantity", "step size"),
        (pb.STOP_MARKET, {"close_position": True}, "quantity", "must be empty with close_position"),
        (
            pb.STOP_MARKET,
            {"quantity": "", "close_position": True, "reduce_only": True},
            "reduce_only",
            "cannot be combined with close_position",
        ),
        (
            pb.STOP,
            {"close_position": True, "quantity": ""},
            "close_position",
            "STOP_MARKET and TAKE_PROFIT_MARKET",
        ),
        (pb.TRAILING_STOP_MARKET, {"callback_rate": ""}, "callback_rate", "is required"),
        (pb.TRAILING_STOP_MARKET, {"callback_rate": "0.05"}, "callback_rate", "0.1-10"),
        (pb.TRAILING_STOP_MARKET, {"callback_rate": "10.1"}, "callback_rate", "0.1-10"),
        (pb.TRAILING_STOP_MARKET, {"callback_rate": "1.25"}, "callback_rate", "steps of 0.1"),
        (pb.TRAILING_STOP_MARKET, {"trigger_price": "49000"}, "trigger_price", "must be empty"),
        (pb.TRAILING_STOP_MARKET, {"activation_price": "51000.01"}, "activation_price", "tick size"),
        (pb.STOP_MARKET, {"callback_rate": "1"}, "callback_rate", "TRAILING_STOP_MARKET orders only"),
        (pb.STOP, {"activation_price": "1"}, "activation_price", "TRAILING_STOP_MARKET orders only"),
        (pb.STOP_MARKET, {"working_type": 7}, "working_type", "CONTRACT_PRICE or MARK_PRICE"),
        (pb.STOP, {"quantity": "0.001", "price": "1000"}, "quantity", "MIN_NOTIONAL"),
    ],
)
def test_rejections_name_field_and_rule(
    kind: pb.OrderType.ValueType, changes: dict[str, Any], field: str, rule: str
) -> None:
    error = rejection(request(kind, **changes))
    assert error.field == field
    assert rule in error.rule


def test_risk_limit_prices_a_stop_at_its_trigger() -> None:
    with pytest.raises(RiskLimitExceeded) as caught:
        validated_order(request(pb.STOP_MARKET, quantity="5.000"), RULES, RISK)  # 5 x 49000 > 200000
    assert caught.value.field == "quantity" and "max_order_notional" in caught.value.rule


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"trigger_price": "49000"}, "trigger_price"),
        ({"callback_rate": "1"}, "callback_rate"),
        ({"activation_price": "1"}, "activation_price"),
        ({"working_type": pb.MARK_PRICE}, "working_type"),
        ({"price_protect": True}, "price_protect"),
        ({"close_position": True}, "close_position"),
    ],
)
def test_plain_orders_take_no_conditional_fields(changes: dict[str, Any], field: str) -> None:
    req = pb.CreateOrderRequest(
        symbol="BTCUSDT", side=pb.BUY, type=pb.LIMIT, quantity="0.010", price="45000", time_in_force=pb.GTC
    )
    req.MergeFrom(pb.CreateOrderRequest(**changes))
    error = rejection(req)
    assert error.field == field and "conditional orders only" in error.rule
