"""The exchange client's algo, amend and cancel-all requests, and how their answers read."""

from __future__ import annotations

import json
from decimal import Decimal
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from order_execution.exchange import errors
from order_execution.exchange.algo_orders import algo_event_report, to_algo_report
from order_execution.exchange.client import BinanceClient
from order_execution.exchange.user_stream import parse_algo_event
from order_execution.orders.model import OrderState, OrderType, Side, TimeInForce, WorkingType
from order_execution.service_layer.order_sync import cancel_at_exchange
from tests.exchange_double import HandlerTransport
from tests.factories import make_order


def client_answering(*bodies: object, status: int = 200) -> tuple[BinanceClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    replies = list(bodies)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = replies.pop(0) if len(replies) > 1 else replies[0]
        return httpx.Response(status, content=json.dumps(body).encode())

    client = BinanceClient(
        "http://exchange.test", api_key="key", secret_key="secret", transport=HandlerTransport(handler)
    )
    return client, seen


def params(request: httpx.Request) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(str(request.url)).query))


ALGO_REPLY = {"algoId": 1000000001, "clientAlgoId": "oe-s", "algoStatus": "NEW", "actualOrderId": ""}


async def test_stop_limit_goes_to_the_algo_endpoint_with_its_terms() -> None:
    order = make_order(
        client_order_id="oe-s",
        type=OrderType.STOP,
        side=Side.SELL,
        price=Decimal("48900.0"),
        time_in_force=TimeInForce.GTC,
        trigger_price=Decimal("49000.0"),
        working_type=WorkingType.MARK_PRICE,
        price_protect=True,
        reduce_only=True,
    )
    client, seen = client_answering(ALGO_REPLY)
    reply = await client.new_algo_order(order)
    [request] = seen
    assert request.method == "POST" and request.url.path == "/fapi/v1/algoOrder"
    sent = params(request)
    assert sent["algoType"] == "CONDITIONAL" and sent["type"] == "STOP" and sent["side"] == "SELL"
    assert sent["triggerPrice"] == "49000" and sent["price"] == "48900" and sent["timeInForce"] == "GTC"
    assert sent["workingType"] == "MARK_PRICE" and sent["priceProtect"] == "TRUE"
    assert sent["reduceOnly"] == "true" and sent["clientAlgoId"] == "oe-s" and sent["quantity"] == "0.01"
    assert "newClientOrderId" not in sent and "signature" in sent
    report = to_algo_report(reply)
    assert report.state is OrderState.WAITING_TRIGGER and report.algo_id == "1000000001"
    await client.close()


async def test_trailing_stop_and_close_position_params() -> None:
    trailing = make_order(
        type=OrderType.TRAILING_STOP_MARKET,
        price=None,
        time_in_force=None,
        callback_rate=Decimal("1.5"),
        activation_price=Decimal("51000"),
    )
    closing = make_order(
        type=OrderType.STOP_MARKET,
        price=None,
        time_in_force=None,
        quantity=Decimal(0),
        trigger_price=Decimal(49000),
        close_position=True,
    )
    client, seen = client_answering(ALGO_REPLY)
    await client.new_algo_order(trailing)
    await client.new_algo_order(closing)
    first, second = (params(r) for r in seen)
    assert first["callbackRate"] == "1.5" and first["activatePrice"] == "51000"
    assert "triggerPrice" not in first and "price" not in first and "timeInForce" not in first
    assert second["closePosition"] == "true" and "quantity" not in second
    await client.close()


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("NEW", OrderState.WAITING_TRIGGER),
        ("TRIGGERING", OrderState.TRIGGERED),
        ("TRIGGERED", OrderState.TRIGGERED),
        ("FINISHED", OrderState.TRIGGERED),
        ("CANCELED", OrderState.CANCELED),
        ("REJECTED", OrderState.REJECTED),
        ("EXPIRED", OrderState.EXPIRED),
    ],
)
def test_algo_statuses(status: str, state: OrderState) -> None:
    assert to_algo_report({**ALGO_REPLY, "algoStatus": status}).state is state
    assert algo_event_report({"X": status, "aid": 1, "ai": ""}).state is state


def test_an_unknown_algo_status_is_an_error_not_a_guess() -> None:
    with pytest.raises(errors.ExchangeError):
        to_algo_report({**ALGO_REPLY, "algoStatus": "PAUSED"})


def test_algo_update_event_names_the_triggered_order_and_reject_reason() -> None:
    event = parse_algo_event(
        {
            "e": "ALGO_UPDATE",
            "E": 5,
            "o": {"caid": "oe-s", "aid": 9, "s": "BTCUSDT", "X": "FINISHED", "ai": "77"},
        }
    )
    assert event.conditional and event.client_order_id == "oe-s" and event.symbol == "BTCUSDT"
    assert event.report.state is OrderState.TRIGGERED and event.report.exchange_order_id == "77"
    rejected = algo_event_report({"X": "REJECTED", "aid": 9, "rm": "Margin is insufficient."})
    assert rejected.reason.endswith("Margin is insufficient.")


async def test_query_and_cancel_algo_by_client_algo_id_and_not_found() -> None:
    client, seen = client_answering({"code": -2013, "msg": "Order does not exist."}, status=400)
    with pytest.raises(errors.OrderNotFoundAtExchange):
        await client.query_algo_order("oe-s")
    assert seen[0].method == "GET" and params(seen[0])["clientAlgoId"] == "oe-s"
    await client.close()


async def test_cancel_picks_the_endpoint_by_how_far_the_order_got() -> None:
    waiting = make_order(type=OrderType.STOP_MARKET, price=None, time_in_force=None, client_order_id="oe-s")
    triggered = waiting.replace(exchange_order_id="77")
    plain = make_order(client_order_id="oe-p")
    client, seen = client_answering(
        {"algoId": 9, "clientAlgoId": "oe-s", "code": "200", "msg": "success"},
        {"status": "CANCELED", "orderId": 77, "executedQty": "0", "avgPrice": "0"},
        {"status": "CANCELED", "orderId": 78, "executedQty": "0", "avgPrice": "0"},
    )
    assert (await cancel_at_exchange(client, waiting)).state is OrderState.CANCELED
    assert (await cancel_at_exchange(client, triggered)).state is OrderState.CANCELED
    assert (await cancel_at_exchange(client, plain)).state is OrderState.CANCELED
    algo, by_id, by_client = seen
    assert (algo.method, algo.url.path, params(algo)["clientAlgoId"]) == (
        "DELETE",
        "/fapi/v1/algoOrder",
        "oe-s",
    )
    assert (by_id.url.path, params(by_id)["orderId"]) == ("/fapi/v1/order", "77")
    assert params(by_client)["origClientOrderId"] == "oe-p"
    await client.close()


async def test_amend_puts_price_and_quantity_by_client_id() -> None:
    order = make_order(client_order_id="oe-a", side=Side.BUY)
    client, seen = client_answering({"status": "NEW", "orderId": 5, "price": "49000", "origQty": "0.02"})
    await client.amend_order(order, price=Decimal("49000.0"), quantity=Decimal("0.020"))
    [request] = seen
    sent = params(request)
    assert request.method == "PUT" and request.url.path == "/fapi/v1/order"
    assert sent["origClientOrderId"] == "oe-a" and sent["side"] == "BUY"
    assert sent["price"] == "49000" and sent["quantity"] == "0.02"
    await client.close()


async def test_amend_refusal_is_a_rejection() -> None:
    client, _ = client_answering({"code": -5027, "msg": "No need to modify the order."}, status=400)
    with pytest.raises(errors.OrderRejected) as caught:
        await client.amend_order(make_order(), price=Decimal(1), quantity=Decimal(1))
    assert caught.value.code == -5027
    await client.close()


async def test_cancel_all_deletes_orders_and_algo_orders_of_the_symbol() -> None:
    client, seen = client_answering({"code": 200, "msg": "The operation of cancel all open order is done."})
    await client.cancel_all_orders("BTCUSDT")
    assert [(r.method, r.url.path, params(r)["symbol"]) for r in seen] == [
        ("DELETE", "/fapi/v1/allOpenOrders", "BTCUSDT"),
        ("DELETE", "/fapi/v1/algoOpenOrders", "BTCUSDT"),
    ]
    await client.close()


async def test_hedge_mode_sends_position_side_instead_of_reduce_only() -> None:
    order = make_order(
        type=OrderType.STOP_MARKET,
        side=Side.SELL,
        price=None,
        time_in_force=None,
        trigger_price=Decimal(49000),
        reduce_only=True,
    )
    client, seen = client_answering({"dualSidePosition": True}, ALGO_REPLY)
    assert await client.position_mode() == "hedge"
    await client.new_algo_order(order)
    sent = params(seen[-1])
    assert sent["positionSide"] == "LONG" and "reduceOnly" not in sent  # a reduce-only SELL closes LONG
    await client.close()
