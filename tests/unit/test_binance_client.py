"""The exchange client classifies every answer once: definite, not executed, or unknown."""

from __future__ import annotations

import json
from decimal import Decimal
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from order_execution.exchange import errors
from order_execution.exchange.client import BinanceClient, to_report
from order_execution.exchange.http import ResponseLost
from order_execution.exchange.signing import sign
from order_execution.orders.model import OrderState, Side
from tests.exchange_double import HandlerTransport
from tests.factories import make_order

ORDER = make_order(side=Side.SELL, price=Decimal("50000.10"), post_only=True, client_order_id="oe-abc")


def client_answering(
    status: int, body: object = None, *, text: str | None = None, headers: dict[str, str] | None = None
) -> tuple[BinanceClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        content = text if text is not None else json.dumps(body)
        return httpx.Response(status, content=content.encode(), headers=headers)

    client = BinanceClient(
        "http://exchange.test",
        api_key="key",
        secret_key="secret",
        transport=HandlerTransport(handler, api_key="key"),
    )
    return client, seen


async def test_new_order_sends_signed_plain_decimals() -> None:
    client, seen = client_answering(200, {"status": "NEW", "orderId": 7, "executedQty": "0", "avgPrice": "0"})
    reply = await client.new_order(ORDER)
    assert reply["orderId"] == 7
    [request] = seen
    assert request.method == "POST" and request.headers["X-MBX-APIKEY"] == "key"
    query = urlsplit(str(request.url)).query
    params = dict(parse_qsl(query))
    assert params["price"] == "50000.1" and params["quantity"] == "0.01"
    assert params["timeInForce"] == "GTX"  # post-only
    assert params["newClientOrderId"] == "oe-abc" and params["newOrderRespType"] == "RESULT"
    unsigned, signature = query.rsplit("&signature=", 1)
    assert sign("secret", unsigned) == signature
    await client.close()


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, {"code": -2019, "msg": "Margin is insufficient."}, errors.OrderRejected),
        (
            400,
            {"code": -5022, "msg": "Due to the order could not be executed as maker..."},
            errors.OrderRejected,
        ),
        (400, {"code": -4116, "msg": "ClientOrderId is duplicated."}, errors.DuplicateClientOrderId),
        (400, {"code": -2011, "msg": "Unknown order sent."}, errors.UnknownOrder),
        (400, {"code": -2013, "msg": "Order does not exist."}, errors.OrderNotFoundAtExchange),
        (
            400,
            {"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."},
            errors.ClockSkew,
        ),
        (
            503,
            {"code": -1008, "msg": "Server is currently overloaded with other requests."},
            errors.ExchangeUnavailable,
        ),
        (
            503,
            {"code": -1000, "msg": "Unknown error, please check your request or try again later."},
            errors.OutcomeUnknown,
        ),
        (
            408,
            {"code": -1007, "msg": "Timeout waiting for response from backend server."},
            errors.OutcomeUnknown,
        ),
        (
            400,
            {"code": -1006, "msg": "An unexpected response was received from the message bus."},
            errors.OutcomeUnknown,
        ),
        (502, None, errors.OutcomeUnknown),
        (503, {"code": -1001, "msg": "Service Unavailable."}, errors.ExchangeUnavailable),
        (429, {"code": -1015, "msg": "Too many new orders."}, errors.RateLimited),
        (418, {"code": -1003, "msg": "Way too many requests; IP banned until 1."}, errors.RateLimited),
    ],
)
async def test_error_classification(status: int, body: object, expected: type[Exception]) -> None:
    client, _ = client_answering(status, body, text=None if body is not None else "<html>bad gateway</html>")
    with pytest.raises(expected) as caught:
        await client.new_order(ORDER)
    assert isinstance(caught.value, errors.ExchangeError)
    await client.close()


async def test_rate_limit_keeps_retry_after() -> None:
    client, _ = client_answering(
        429, {"code": -1003, "msg": "Too many requests"}, headers={"Retry-After": "7"}
    )
    with pytest.raises(errors.RateLimited) as caught:
        await client.query_order("BTCUSDT", "oe-abc")
    assert caught.value.retry_after_s == 7.0
    await client.close()


async def test_waf_html_403_is_not_executed() -> None:
    client, _ = client_answering(403, text="<html>Request blocked</html>")
    with pytest.raises(errors.ExchangeUnavailable):
        await client.new_order(ORDER)
    await client.close()


async def test_dropped_connection_on_post_is_unknown_but_on_get_is_not() -> None:
    def drop(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)

    client = BinanceClient(
        "http://exchange.test", api_key="k", secret_key="s", transport=HandlerTransport(drop)
    )
    with pytest.raises(errors.OutcomeUnknown) as caught:
        await client.new_order(ORDER)
    assert isinstance(caught.value.__cause__, ResponseLost)
    assert isinstance(caught.value.__cause__.__cause__, httpx.RemoteProtocolError)
    with pytest.raises(errors.ExchangeUnavailable):
        await client.query_order("BTCUSDT", "oe-abc")
    await client.close()


async def test_connect_failure_means_not_sent() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = BinanceClient(
        "http://exchange.test", api_key="k", secret_key="s", transport=HandlerTransport(refuse)
    )
    with pytest.raises(errors.ExchangeUnavailable):
        await client.new_order(ORDER)
    await client.close()


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("NEW", OrderState.SUBMITTED),
        ("PARTIALLY_FILLED", OrderState.PARTIALLY_FILLED),
        ("FILLED", OrderState.FILLED),
        ("CANCELED", OrderState.CANCELED),
        ("EXPIRED", OrderState.EXPIRED),
        ("EXPIRED_IN_MATCH", OrderState.EXPIRED),
    ],
)
def test_status_mapping(status: str, state: OrderState) -> None:
    report = to_report({"status": status, "executedQty": "0.004", "avgPrice": "50000.5", "orderId": 42})
    assert report.state is state
    assert report.filled_quantity == Decimal("0.004") and report.exchange_order_id == "42"


def test_unknown_status_is_an_error_not_a_guess() -> None:
    with pytest.raises(errors.ExchangeError, match="unexpected order status"):
        to_report({"status": "NEW_INSURANCE"})
