"""The reconciler with conditional orders: waiting ones are checked against openAlgoOrders, the
rest queried on the algo service (and their triggered order by its id); cancels pick the
right endpoint. Never a POST."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import fakeredis
import httpx
import pytest

from order_execution.exchange.client import BinanceClient
from order_execution.listener.reconciler import Reconciler
from order_execution.orders.model import Order, OrderState, OrderType, now_ms
from order_execution.orders.store import OrderStore
from tests import factories
from tests.exchange_double import HandlerTransport
from tests.unit.test_reconciler import POLICY, QUIET, to

S = OrderState


def _json(status: int, body: Any) -> httpx.Response:
    return httpx.Response(status, content=json.dumps(body).encode())


@dataclass(repr=False)
class AlgoVenue:
    """Algo orders by clientAlgoId, plain orders by orderId; records every request."""

    algos: dict[str, dict[str, Any]] = field(default_factory=dict)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        path = request.url.path.removeprefix("/fapi/v1/")
        self.requests.append(
            f"{request.method} {path} {params.get('clientAlgoId') or params.get('orderId') or ''}".rstrip()
        )
        if (request.method, path) == ("GET", "openOrders"):
            return _json(200, [o for o in self.orders.values() if o["status"] == "NEW"])
        if (request.method, path) == ("GET", "openAlgoOrders"):
            return _json(200, [a for a in self.algos.values() if a["algoStatus"] == "NEW"])
        if (request.method, path) == ("GET", "algoOrder"):
            found = self.algos.get(params["clientAlgoId"])
            return _json(200, found) if found else _json(400, {"code": -2013, "msg": "Order does not exist."})
        if (request.method, path) == ("GET", "order"):
            found = self.orders.get(params["orderId"])
            return _json(200, found) if found else _json(400, {"code": -2013, "msg": "Order does not exist."})
        if (request.method, path) == ("DELETE", "algoOrder"):
            found = self.algos[params["clientAlgoId"]]
            if found["algoStatus"] != "NEW":
                return _json(400, {"code": -2011, "msg": "Unknown order sent."})
            found["algoStatus"] = "CANCELED"
            return _json(200, {"algoId": found["algoId"], "code": "200", "msg": "success"})
        raise AssertionError(f"the reconciler must not send {request.method} {path}")


@pytest.fixture
async def rig() -> AsyncIterator[tuple[OrderStore, AlgoVenue, Reconciler]]:
    redis = fakeredis.FakeAsyncRedis()
    venue = AlgoVenue()
    client = BinanceClient(
        "http://x.test", api_key="k", secret_key="s", transport=HandlerTransport(venue.handle)
    )
    store = OrderStore(redis, ttl_s=3600)
    yield store, venue, Reconciler(store, client, POLICY)
    await client.close()
    await redis.aclose()


async def conditional(store: OrderStore, n: int, *path: OrderState, **fields: Any) -> Order:
    now = now_ms()
    order = factories.make_order(
        order_id=f"o{n}",
        client_order_id=f"oe-{n}",
        type=OrderType.STOP_MARKET,
        price=None,
        time_in_force=None,
        trigger_price=Decimal(49000),
        created_at=now - 30_000,
    )
    await store.create(order)
    for state in path:
        assert (await store.transition(order.order_id, to(state))).changed, state
    return (
        await store.transition(order.order_id, lambda o: o.replace(updated_at=now - QUIET, **fields))
    ).order


def algo(n: int, status: str, actual: str = "") -> dict[str, Any]:
    return {"algoId": 1000 + n, "clientAlgoId": f"oe-{n}", "algoStatus": status, "actualOrderId": actual}


async def test_waiting_orders_listed_as_open_cost_one_snapshot(rig: Any) -> None:
    store, venue, reconciler = rig
    for n in (1, 2):
        await conditional(store, n, S.SUBMITTING, S.WAITING_TRIGGER, algo_id=str(1000 + n))
        venue.algos[f"oe-{n}"] = algo(n, "NEW")
    result = await reconciler.sweep()
    assert venue.requests == ["GET openAlgoOrders"] and result.changed == 0


async def test_a_waiting_order_no_longer_listed_is_queried_and_settled(rig: Any) -> None:
    store, venue, reconciler = rig
    await conditional(store, 1, S.SUBMITTING, S.WAITING_TRIGGER, algo_id="1001")
    venue.algos["oe-1"] = algo(1, "FINISHED", actual="77")
    venue.orders["77"] = {
        "orderId": 77,
        "clientOrderId": "x-77",
        "status": "NEW",
        "executedQty": "0",
        "avgPrice": "0",
    }
    await reconciler.sweep()
    order = await store.get("o1")
    assert order.state is S.SUBMITTED and order.exchange_order_id == "77"
    assert venue.requests == ["GET openAlgoOrders", "GET algoOrder oe-1", "GET order 77"]
    assert await store.find_by_client_id("x-77") is not None


async def test_an_unknown_send_never_placed_is_rejected_after_the_window(rig: Any) -> None:
    store, venue, reconciler = rig
    await conditional(store, 1, S.SUBMITTING, S.UNKNOWN, sent_at=now_ms() - 20_000)
    await reconciler.sweep()
    assert (await store.get("o1")).state is S.REJECTED
    assert venue.requests[-1] == "GET algoOrder oe-1"


async def test_a_pending_cancel_still_waiting_is_canceled_on_the_algo_service(rig: Any) -> None:
    store, venue, reconciler = rig
    await conditional(store, 1, S.SUBMITTING, S.WAITING_TRIGGER, S.PENDING_CANCEL, algo_id="1001")
    venue.algos["oe-1"] = algo(1, "NEW")
    await reconciler.sweep()
    assert (await store.get("o1")).state is S.CANCELED
    assert "DELETE algoOrder oe-1" in venue.requests
