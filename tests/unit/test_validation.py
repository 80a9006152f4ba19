"""CreateOrder validation: each rule's rejection names the field and says the rule."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from order_execution.gateway.validation import quote
from order_execution.orders.errors import InvalidOrder, RiskLimitExceeded
from order_execution.orders.model import OrderType, TimeInForce
from order_execution.orders.rules import SymbolRules
from order_execution.proto import order_pb2 as pb
from order_execution.runtime.settings import RiskSettings
from tests.factories import BTC_RULES
from tests.unit.gateway_harness import validated_order

BTC = BTC_RULES
HALTED = SymbolRules.from_exchange_info(
    {
        "symbol": "XYZUSDT",
        "status": "SETTLING",
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "0.1", "maxPrice": "100", "tickSize": "0.1"},
            {"filterType": "LOT_SIZE", "minQty": "1", "maxQty": "10", "stepSize": "1"},
        ],
    }
)
RULES = {"BTCUSDT": BTC, "XYZUSDT": HALTED}
RISK = RiskSettings(allowed_symbols=["BTCUSDT", "XYZUSDT"], max_order_notional=Decimal(200_000))


def request(**changes: Any) -> pb.CreateOrderRequest:
    fields: dict[str, Any] = {
        "symbol": "BTCUSDT",
        "side": pb.BUY,
        "type": pb.LIMIT,
        "quantity": "0.010",
        "price": "45000.0",
        "time_in_force": pb.GTC,
    }
    fields.update(changes)
    return pb.CreateOrderRequest(**fields)


def test_valid_limit_order_uses_exact_decimals() -> None:
    order = validated_order(request(), RULES, RISK)
    assert order.price == Decimal("45000.0") and order.quantity == Decimal("0.010")
    assert order.type is OrderType.LIMIT and order.time_in_force is TimeInForce.GTC
    assert order.client_order_id.startswith("oe-") and len(order.client_order_id) <= 36


def test_on_tick_prices_that_float_modulo_rejects_are_accepted() -> None:
    # The original service's math.Mod rejected most of these.
    for price in ("45000.0", "45000.3", "50000.1", "600.0", "1234.5"):
        assert validated_order(request(price=price, quantity="0.300"), RULES, RISK).price == Decimal(price)


def test_valid_market_order() -> None:
    order = validated_order(request(type=pb.MARKET, price="", time_in_force=pb.TIF_UNSPECIFIED), RULES, RISK)
    assert order.type is OrderType.MARKET and order.price is None and order.time_in_force is None


def test_post_only_goes_out_as_gtx() -> None:
    order = validated_order(request(post_only=True, time_in_force=pb.TIF_UNSPECIFIED), RULES, RISK)
    assert order.exchange_time_in_force is TimeInForce.GTX


@pytest.mark.parametrize(
    ("changes", "field", "rule"),
    [
        ({"symbol": ""}, "symbol", "is required"),
        ({"symbol": "btcusdt"}, "symbol", "upper-case"),
        ({"symbol": "DOGEUSDT"}, "symbol", "not traded here"),
        ({"symbol": "XYZUSDT", "price": "1", "quantity": "1"}, "symbol", "not trading (status SETTLING)"),
        ({"side": pb.SIDE_UNSPECIFIED}, "side", "is required (BUY or SELL)"),
        ({"side": 7}, "side", "unknown value 7"),
        ({"type": pb.TYPE_UNSPECIFIED}, "type", "is required (LIMIT, MARKET, STOP_MARKET"),
        ({"quantity": ""}, "quantity", "is required"),
        ({"quantity": "0"}, "quantity", "must be greater than zero"),
        ({"quantity": "0.000"}, "quantity", "must be greater than zero"),
        ({"quantity": "abc"}, "quantity", "plain decimal string"),
        ({"quantity": "1e-3"}, "quantity", "plain decimal string"),
        ({"quantity": "-1"}, "quantity", "plain decimal string"),
        ({"quantity": "0.0005"}, "quantity", "at least 0.001 (LOT_SIZE minQty)"),
        ({"quantity": "1000.001"}, "quantity", "at most 1000 (LOT_SIZE maxQty)"),
        ({"quantity": "0.0105"}, "quantity", "multiple of step size 0.001"),
        ({"price": ""}, "price", "is required"),
        ({"price": "45000.05"}, "price", "multiple of tick size 0.1"),
        ({"price": "NaN"}, "price", "plain decimal string"),
        ({"price": "1.2.3"}, "price", "plain decimal string"),
        ({"price": "500"}, "price", "at least 556.8 (minPrice)"),
        ({"price": "5000000"}, "price", "at most 4529764 (maxPrice)"),
        ({"time_in_force": pb.TIF_UNSPECIFIED}, "time_in_force", "is required for LIMIT"),
        ({"post_only": True, "time_in_force": pb.IOC}, "time_in_force", "cannot be post-only"),
        ({"quantity": "0.002"}, "quantity", "must be at least 100 (MIN_NOTIONAL)"),
        ({"type": pb.MARKET, "price": "45000", "time_in_force": 0}, "price", "must be empty for MARKET"),
        ({"type": pb.MARKET, "price": "", "time_in_force": pb.GTC}, "time_in_force", "unset for MARKET"),
        (
            {"type": pb.MARKET, "price": "", "time_in_force": 0, "quantity": "121"},
            "quantity",
            "at most 120 (MARKET_LOT_SIZE maxQty)",
        ),
        ({"client_order_id": "has space"}, "client_order_id", "1-36 characters"),
        ({"client_order_id": "x" * 37}, "client_order_id", "1-36 characters"),
        # Digits other than ASCII ones, which Python's Decimal would read as numbers:
        ({"quantity": "\uff10.\uff10\uff11\uff10"}, "quantity", "ASCII digits"),  # full-width
        ({"quantity": "0.0\uff110"}, "quantity", "ASCII digits"),
        ({"price": "45000.\u0660"}, "price", "ASCII digits"),  # Arabic-Indic
        ({"price": "\u0664\u0665000"}, "price", "ASCII digits"),
        ({"price": "4\u00b2000"}, "price", "ASCII digits"),  # superscript two: isdigit() says yes
        # Length bounds, said with the field's name:
        ({"symbol": "B" * 31}, "symbol", "at most 30 characters, got 31"),
        ({"quantity": "0" * 40 + "1"}, "quantity", "at most 40 characters, got 41"),
        ({"price": "4" * 41}, "price", "at most 40 characters, got 41"),
        ({"user_id": "u" * 65}, "user_id", "at most 64 characters, got 65"),
        ({"user_id": "desk\n7"}, "user_id", "printable ASCII without spaces"),
        ({"user_id": "d\u00e9sk"}, "user_id", "printable ASCII without spaces"),
    ],
)
def test_rejections_name_field_and_rule(changes: dict[str, Any], field: str, rule: str) -> None:
    with pytest.raises(InvalidOrder) as caught:
        validated_order(request(**changes), RULES, RISK)
    assert caught.value.field == field
    assert rule in caught.value.rule
    assert str(caught.value).startswith(f"{field}: ")


def test_reduce_only_is_exempt_from_min_notional() -> None:
    assert validated_order(request(quantity="0.001", reduce_only=True), RULES, RISK).reduce_only


def test_risk_limit_on_notional() -> None:
    with pytest.raises(
        RiskLimitExceeded,
        match=r"quantity: price x quantity = 450000 exceeds 200000 \(risk.max_order_notional\)",
    ):
        validated_order(request(quantity="10"), RULES, RISK)


def test_risk_limit_on_quantity() -> None:
    risk = RISK.model_copy(update={"max_order_quantity": Decimal("0.5")})
    with pytest.raises(RiskLimitExceeded, match=r"risk\.max_order_quantity"):
        validated_order(request(quantity="0.6", type=pb.MARKET, price="", time_in_force=0), RULES, risk)


def test_user_id_up_to_the_bound_is_kept() -> None:
    order = validated_order(request(user_id="strategy-7@desk.eu:" + "x" * 45), RULES, RISK)
    assert order.user_id.endswith("x")


def test_errors_quote_only_a_short_prefix_of_a_bad_value() -> None:
    assert quote("btc") == "'btc'"
    assert quote("y" * 5000) == f"{'y' * 16!r}... (5000 characters)"
    with pytest.raises(InvalidOrder) as caught:
        validated_order(request(symbol="btc" + "x" * 27), RULES, RISK)
    assert str(caught.value) == (
        "symbol: must be 2-30 upper-case letters and digits, e.g. BTCUSDT, "
        "got 'btcxxxxxxxxxxxxx'... (30 characters)"
    )
