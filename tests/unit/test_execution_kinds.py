"""The executor with conditional orders, amendments and cancel-all: same claim, same evidence."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from order_execution.orders.model import Order, OrderState, OrderType, now_ms
from order_execution.orders.store import OrderStore
from order_execution.workers.execution import CancelNotSettled
from tests import factories
from tests.unit.test_execution import order_object, reply, setup  # noqa: F401  (setup: the fixture)

S = OrderState


async def new_stop(store: OrderStore) -> Order:
    order = factories.make_order(
        type=OrderType.STOP_MARKET,
        price=None,
        time_in_force=None,
        trigger_price=Decimal(49000),
        created_at=now_ms(),
    )
    return (await store.create(order)).order


def algo(status: str, actual: str = "") -> Any:
    return reply(
        200, {"algoId": 1000000001, "clientAlgoId": "oe-1", "algoStatus": status, "actualOrderId": actual}
    )


def path_and_params(request: httpx.Request) -> tuple[str, str, dict[str, str]]:
    return request.method, request.url.path, dict(parse_qsl(urlsplit(str(request.url)).query))


async def test_conditional_order_is_claimed_then_posted_once_to_the_algo_service(setup: Any) -> None:  # noqa: F811
    executor, store, exchange, bus, _ = setup
    await new_stop(store)
    exchange.answers.append(algo("NEW"))
    await executor.submit("o1")
    await executor.submit("o1")  # a redelivery: never a second POST
    stored = await store.get("o1")
    assert stored.state is S.WAITING_TRIGGER and stored.algo_id == "1000000001"
    [request] = exchange.requests
    method, path, params = path_and_params(request)
    assert (method, path, params["clientAlgoId"], params["triggerPrice"]) == (
        "POST",
        "/fapi/v1/algoOrder",
        "oe-1",
        "49000",
    )
    assert [o.state for o in await bus.published()] == [S.SUBMITTING, S.WAITING_TRIGGER]


async def test_ambiguous_algo_send_is_settled_by_querying_the_algo_service(setup: Any) -> None:  # noqa: F811
    executor, store, exchange, _, _ = setup
    await new_stop(store)
    exchange.answers += [reply(503, {"code": -1000, "msg": "Unknown error"}), algo("NEW")]
    await executor.submit("o1")
    assert (await store.get("o1")).state is S.WAITING_TRIGGER
    method, path, params = path_and_params(exchange.requests[1])
    assert (method, path, params["clientAlgoId"]) == ("GET", "/fapi/v1/algoOrder", "oe-1")


async def test_cancel_after_trigger_cancels_the_resulting_order(setup: Any) -> None:  # noqa: F811
    executor, store, exchange, _, _ = setup
    await new_stop(store)
    exchange.answers.append(algo("NEW"))
    await executor.submit("o1")
    await store.transition("o1", lambda o: o.replace(state=S.PENDING_CANCEL))
    # The algo service says it already fired: -2011; the query shows the order it placed, still open.
    exchange.answers += [
        reply(400, {"code": -2011, "msg": "Unknown order sent."}),
        algo("FINISHED", actual="77"),
        order_object("NEW"),
    ]
    with pytest.raises(CancelNotSettled):
        await executor.cancel("o1")
    pending = await store.get("o1")
    assert pending.state is S.PENDING_CANCEL and pending.exchange_order_id == "77"
    exchange.answers.append(
        reply(200, {"status": "CANCELED", "orderId": 77, "executedQty": "0", "avgPrice": "0"})
    )
    await executor.cancel("o1")  # the retry
    assert (await store.get("o1")).state is S.CANCELED
    method, path, params = path_and_params(exchange.requests[-1])
    assert (method, path, params["orderId"]) == ("DELETE", "/fapi/v1/order", "77")


async def test_amend_stores_the_confirmed_terms(setup: Any) -> None:  # noqa: F811
    executor, store, exchange, bus, _ = setup
    await store.create(factories.make_order(state=S.SUBMITTED, created_at=now_ms()))
    exchange.answers.append(
        reply(
            200,
            {
                "status": "NEW",
                "orderId": 99,
                "executedQty": "0",
                "avgPrice": "0",
                "price": "49000",
                "origQty": "0.02",
            },
        )
    )
    await executor.amend("o1", "49000", "0.02")
    stored = await store.get("o1")
    assert (
        stored.price == Decimal(49000) and stored.quantity == Decimal("0.02") and stored.state is S.SUBMITTED
    )
    assert path_and_params(exchange.requests[0])[:2] == ("PUT", "/fapi/v1/order")
    last = (await bus.published())[-1]
    assert (last.price, last.quantity, last.version) == (Decimal(49000), Decimal("0.02"), 2)


async def test_a_refused_amendment_changes_nothing(setup: Any) -> None:  # noqa: F811
    executor, store, exchange, _, _ = setup
    await store.create(factories.make_order(state=S.SUBMITTED, created_at=now_ms()))
    exchange.answers.append(reply(400, {"code": -5027, "msg": "No need to modify the order."}))
    await executor.amend("o1", "50000", "0.01")
    stored = await store.get("o1")
    assert stored.version == 1 and stored.price == Decimal(50000)


async def test_amend_skips_an_order_no_longer_resting(setup: Any) -> None:  # noqa: F811
    executor, store, exchange, _, _ = setup
    await store.create(factories.make_order(state=S.FILLED, created_at=now_ms()))
    await executor.amend("o1", "49000", "0.02")
    assert exchange.requests == []


async def test_cancel_all_retries_when_the_exchange_could_not_answer(setup: Any) -> None:  # noqa: F811
    executor, _, exchange, _, _ = setup
    exchange.answers.append(reply(503, {"code": -1000, "msg": "Unknown error"}))
    with pytest.raises(CancelNotSettled):
        await executor.cancel_all("BTCUSDT")
    done = {"code": 200, "msg": "The operation of cancel all open order is done."}
    exchange.answers += [reply(200, done), reply(200, done)]
    await executor.cancel_all("BTCUSDT")
    assert [path_and_params(r)[1] for r in exchange.requests[1:]] == [
        "/fapi/v1/allOpenOrders",
        "/fapi/v1/algoOpenOrders",
    ]
