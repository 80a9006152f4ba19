"""Exact or refused: every decimal a request carries reaches the exchange as asked, or is refused.

Property tests over the decimal strings a user could send (digits before and after the
point, up to and past the 40-character bound, on tick or step and off it by as little as
one unit in the 38th place). The oracle is `fractions.Fraction` built from the digits,
independent of `decimal` and its contexts: either the gateway's validation refuses the
request with InvalidOrder naming the field, or the value stored (Order JSON) and the
value in the exchange request's query string equal the asked value exactly.
Hypothesis runs derandomized (a fixed sequence of examples), so CI sees the same cases each run.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from fractions import Fraction
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from order_execution.exchange.client import BinanceClient
from order_execution.gateway.validation import MAX_DECIMAL_CHARS
from order_execution.orders.errors import InvalidOrder
from order_execution.orders.exact import product
from order_execution.orders.model import Order, OrderType, decimal_str
from order_execution.proto import order_pb2 as pb
from order_execution.runtime.settings import RiskSettings
from tests.exchange_double import HandlerTransport
from tests.factories import BTC_RULES
from tests.unit.gateway_harness import validated_order

RULES = {"BTCUSDT": BTC_RULES}
RISK = RiskSettings(allowed_symbols=["BTCUSDT"])  # max_order_notional 1,000,000 USDT
PROPERTY = settings(
    max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)

# BTC_RULES' filters, as Fractions for the oracle.
MIN_PRICE, MAX_PRICE, TICK = Fraction("556.80"), Fraction(4529764), Fraction("0.10")
MIN_QTY, MAX_QTY, STEP = Fraction("0.001"), Fraction(1000), Fraction("0.001")
MAX_NOTIONAL, MIN_NOTIONAL = Fraction(1_000_000), Fraction(100)
QUANTITY = "0.2"  # with any price in the filter: notional 111-905,953, inside both notional rules
PRICE = "50000"  # on tick
# The price (off tick in the 34th place, 40 characters) and an on-tick one as long.
OFF_TICK_40 = "50000.0000000000000000000000000000000001"
ON_TICK_40 = "50000." + "0" * 34


def value_of(text: str) -> Fraction:
    """The exact value of a plain decimal string ("12.50", "7.", ".5"), without `decimal`."""
    whole, _, fraction = text.partition(".")
    return Fraction(int(whole or "0")) + Fraction(int(fraction or "0"), 10 ** len(fraction))


def plain_decimal(text: str) -> bool:
    """The gateway's own shape rule, restated: ASCII digits with at most one '.', at most 40 characters."""
    return (
        0 < len(text) <= MAX_DECIMAL_CHARS
        and text != "."
        and text.count(".") <= 1
        and all(c in "0123456789." for c in text)
    )


def whole_steps(value: Fraction, base: Fraction, step: Fraction) -> bool:
    return ((value - base) / step).denominator == 1


def text_for(value: Fraction, trailing_zeros: int) -> str:
    """`value` (a finite decimal) written out in full, then up to `trailing_zeros` zeros after the
    point, as many as keep it within 40 characters (longer strings come from `any_decimal`)."""
    whole, remainder = divmod(value, 1)
    digits = ""
    while remainder:
        remainder *= 10
        digit, remainder = divmod(remainder, 1)
        digits += str(digit)
    text = f"{whole}.{digits}" if digits else str(whole)
    point = "" if digits else "."
    room = MAX_DECIMAL_CHARS - len(text) - len(point)
    if trailing_zeros and room > 0:
        text += point + "0" * min(trailing_zeros, room)
    return text


# Any string of digits with or without a point, up to and a little past the 40-character bound.
any_decimal = st.builds(
    lambda whole, fraction, point: whole + ("." + fraction if point else ""),
    st.text("0123456789", min_size=0, max_size=22),
    st.text("0123456789", min_size=0, max_size=40),
    st.booleans(),
).filter(lambda text: text not in ("", ".") and len(text) <= MAX_DECIMAL_CHARS + 2)


def on_grid(base: Fraction, step: Fraction, top: Fraction) -> st.SearchStrategy[str]:
    """Values base + k x step up to `top`, with trailing zeros, or nudged off the grid by 10^-n."""
    steps = int((top - base) / step)
    return st.builds(
        lambda k, zeros, nudge_places, nudge_up: text_for(
            base
            + k * step
            + (0 if nudge_places is None else (1 if nudge_up else -1) * Fraction(1, 10**nudge_places)),
            zeros,
        ),
        st.integers(0, steps + 2),
        st.integers(0, 36),
        st.none() | st.integers(1, 38),
        st.booleans(),
    )


prices = any_decimal | on_grid(MIN_PRICE, TICK, MAX_PRICE)
quantities = any_decimal | on_grid(MIN_QTY, STEP, Fraction(25))
callback_rates = any_decimal | on_grid(Fraction("0.1"), Fraction("0.1"), Fraction(10))


def price_accepted(text: str) -> bool:
    if not plain_decimal(text):
        return False
    value = value_of(text)
    return MIN_PRICE <= value <= MAX_PRICE and whole_steps(value, MIN_PRICE, TICK)


def quantity_accepted(text: str, price: Fraction) -> bool:
    if not plain_decimal(text):
        return False
    value = value_of(text)
    notional = value * price
    return (
        MIN_QTY <= value <= MAX_QTY
        and whole_steps(value, MIN_QTY, STEP)
        and MIN_NOTIONAL <= notional <= MAX_NOTIONAL
    )


def callback_accepted(text: str) -> bool:
    if not plain_decimal(text):
        return False
    value = value_of(text)
    return Fraction("0.1") <= value <= 10 and whole_steps(value, Fraction(0), Fraction("0.1"))


def request(**changes: Any) -> pb.CreateOrderRequest:
    fields: dict[str, Any] = {
        "symbol": "BTCUSDT",
        "side": pb.BUY,
        "type": pb.LIMIT,
        "quantity": QUANTITY,
        "price": PRICE,
        "time_in_force": pb.GTC,
    }
    fields.update(changes)
    return pb.CreateOrderRequest(**fields)


def sent_params(order: Order) -> dict[str, str]:
    """The query parameters the exchange client sends for `order` (new order, or algo order if
    conditional), read back from the request that reached the fake exchange."""
    seen: list[httpx.Request] = []

    def handler(http_request: httpx.Request) -> httpx.Response:
        seen.append(http_request)
        body = {"status": "NEW", "orderId": 7, "algoId": 8, "algoStatus": "NEW", "executedQty": "0"}
        return httpx.Response(200, content=json.dumps(body).encode())

    async def send() -> None:
        client = BinanceClient(
            "http://exchange.test", api_key="k", secret_key="s", transport=HandlerTransport(handler)
        )
        if order.type.is_conditional:
            await client.new_algo_order(order)
        else:
            await client.new_order(order)
        await client.close()

    asyncio.run(send())
    [sent] = seen
    return dict(parse_qsl(urlsplit(str(sent.url)).query))


def outcome(req: pb.CreateOrderRequest) -> tuple[Order | None, InvalidOrder | None]:
    try:
        return validated_order(req, RULES, RISK), None
    except InvalidOrder as exc:
        return None, exc


def stored(order: Order) -> Order:
    """The order as a worker reads it back from the store."""
    return Order.from_json(order.to_json())


def conditional(kind: pb.OrderType.ValueType, **changes: Any) -> pb.CreateOrderRequest:
    """A SELL of `kind` with no price or time in force unless `changes` give them."""
    return request(
        **{"type": kind, "side": pb.SELL, "price": "", "time_in_force": pb.TIF_UNSPECIFIED, **changes}
    )


def sent_or_refused(req: pb.CreateOrderRequest, *, field: str, accepted: bool) -> dict[str, str] | None:
    """Assert `req` is refused naming `field` unless `accepted`; if accepted, the parameters the
    exchange received for it (after a trip through the store)."""
    order, refused = outcome(req)
    if not accepted:
        assert refused is not None and refused.field == field, (req, order)
        return None
    assert order is not None, (req, refused)
    return sent_params(stored(order))


@PROPERTY
@given(prices)
@example(OFF_TICK_40)
@example(ON_TICK_40)
def test_a_limit_price_is_sent_exactly_as_asked_or_refused_naming_price(text: str) -> None:
    sent = sent_or_refused(request(price=text), field="price", accepted=price_accepted(text))
    if sent is not None:
        assert value_of(sent["price"]) == value_of(text) and value_of(sent["quantity"]) == value_of(QUANTITY)


@PROPERTY
@given(quantities)
@example("0.2000000000000000000000000000000001")
@example("0.2" + "0" * 37)
def test_a_quantity_is_sent_exactly_as_asked_or_refused_naming_quantity(text: str) -> None:
    accepted = quantity_accepted(text, value_of(PRICE))
    sent = sent_or_refused(request(quantity=text), field="quantity", accepted=accepted)
    if sent is not None:
        assert value_of(sent["quantity"]) == value_of(text)


@PROPERTY
@given(prices)
@example(OFF_TICK_40)
@example(ON_TICK_40)
def test_a_trigger_price_is_sent_exactly_as_asked_or_refused_naming_it(text: str) -> None:
    req = conditional(pb.STOP_MARKET, trigger_price=text)
    sent = sent_or_refused(req, field="trigger_price", accepted=price_accepted(text))
    if sent is not None:
        assert value_of(sent["triggerPrice"]) == value_of(text)


@PROPERTY
@given(prices)
@example(OFF_TICK_40)
@example(ON_TICK_40)
def test_a_stop_limit_price_is_sent_exactly_as_asked_or_refused_naming_price(text: str) -> None:
    req = conditional(pb.STOP, price=text, time_in_force=pb.GTC, trigger_price="50000.1")
    sent = sent_or_refused(req, field="price", accepted=price_accepted(text))
    if sent is not None:
        assert value_of(sent["price"]) == value_of(text)
        assert value_of(sent["triggerPrice"]) == Fraction("50000.1")


@PROPERTY
@given(prices)
@example(OFF_TICK_40)
@example(ON_TICK_40)
def test_an_activation_price_is_sent_exactly_as_asked_or_refused_naming_it(text: str) -> None:
    req = conditional(pb.TRAILING_STOP_MARKET, callback_rate="1", activation_price=text)
    sent = sent_or_refused(req, field="activation_price", accepted=price_accepted(text))
    if sent is not None:
        assert value_of(sent["activatePrice"]) == value_of(text)


@PROPERTY
@given(callback_rates)
@example("1.0000000000000000000000000000000000001")
def test_a_callback_rate_is_sent_exactly_as_asked_or_refused_naming_it(text: str) -> None:
    req = conditional(pb.TRAILING_STOP_MARKET, callback_rate=text)
    sent = sent_or_refused(req, field="callback_rate", accepted=callback_accepted(text))
    if sent is not None:
        assert value_of(sent["callbackRate"]) == value_of(text)


@PROPERTY
@given(prices, quantities)
@example(OFF_TICK_40, "0.2")
@example("50000.1", "0.2000000000000000000000000000000001")
def test_an_amendment_is_checked_exactly_and_sent_as_asked(price: str, quantity: str) -> None:
    """What AmendOrder checks (the symbol's filters) and what the worker's PUT carries."""
    accepted = price_accepted(price) and quantity_accepted(quantity, value_of(price))
    try:
        BTC_RULES.check_price(Decimal(price))
        BTC_RULES.check_quantity(Decimal(quantity), OrderType.LIMIT)
        BTC_RULES.check_notional(Decimal(price), Decimal(quantity), reduce_only=False)
        if product("quantity", Decimal(price), Decimal(quantity)) > RISK.max_order_notional:
            raise InvalidOrder("quantity", "over max_order_notional")
    except InvalidOrder as exc:
        assert not accepted and exc.field in ("price", "quantity"), (price, quantity)
        return
    if not plain_decimal(price) or not plain_decimal(quantity):
        return  # the gateway's shape rules refuse these before the filters (tested above)
    assert accepted, (price, quantity)
    seen: list[httpx.Request] = []

    def handler(http_request: httpx.Request) -> httpx.Response:
        seen.append(http_request)
        return httpx.Response(200, content=b'{"status": "NEW", "orderId": 7}')

    async def send() -> None:
        client = BinanceClient(
            "http://exchange.test", api_key="k", secret_key="s", transport=HandlerTransport(handler)
        )
        # The amend message carries decimal_str text; the worker parses it back.
        await client.amend_order(
            stored(validated_order(request(), RULES, RISK)),
            price=Decimal(decimal_str(Decimal(price))),
            quantity=Decimal(decimal_str(Decimal(quantity))),
        )
        await client.close()

    asyncio.run(send())
    [sent] = seen
    params = dict(parse_qsl(urlsplit(str(sent.url)).query))
    assert value_of(params["price"]) == value_of(price) and value_of(params["quantity"]) == value_of(quantity)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.decimals(allow_nan=False, allow_infinity=False, places=None))
def test_decimal_str_never_changes_a_value(value: Decimal) -> None:
    text = decimal_str(value)
    assert "E" not in text.upper() and Decimal(text) == value
    assert not ("." in text and text.endswith("0"))  # trailing zeros are normalised away


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text("0123456789", min_size=1, max_size=60), st.text("0123456789", min_size=0, max_size=60))
def test_every_decimal_of_an_order_survives_storage_exactly(whole: str, fraction: str) -> None:
    """Digits far past 28 (the default context's precision) round-trip through the Order JSON."""
    value = Decimal(f"{whole}.{fraction}" if fraction else whole)
    order = validated_order(request(), RULES, RISK).replace(
        quantity=value, price=value, trigger_price=value, callback_rate=value, activation_price=value
    )
    back = stored(order)
    for field in ("quantity", "price", "trigger_price", "callback_rate", "activation_price"):
        assert getattr(back, field) == value, field
