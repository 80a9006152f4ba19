"""positionSide on orders: one-way vs hedge mode, derived or explicit, and re-detection after -4061."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import httpx
import pytest

from order_execution.exchange import errors
from order_execution.exchange.client import BinanceClient
from order_execution.exchange.position_mode import position_params
from order_execution.orders.model import Side
from tests.exchange_double import HandlerTransport
from tests.factories import make_order


@pytest.mark.parametrize(
    ("side", "reduce_only", "expected"),
    [
        (Side.BUY, False, "LONG"),
        (Side.SELL, False, "SHORT"),
        (Side.SELL, True, "LONG"),
        (Side.BUY, True, "SHORT"),
    ],
)
def test_hedge_mode_derives_the_side_and_never_sends_reduce_only(
    side: Side, reduce_only: bool, expected: str
) -> None:
    order = make_order(side=side, reduce_only=reduce_only)
    assert position_params(order, hedge_mode=True) == [("positionSide", expected)]


def test_an_explicit_position_side_wins_in_hedge_mode() -> None:
    order = make_order(side=Side.BUY, position_side="SHORT")
    assert position_params(order, hedge_mode=True) == [("positionSide", "SHORT")]


def test_one_way_mode_sends_no_position_side() -> None:
    assert position_params(make_order(reduce_only=True), hedge_mode=False) == [("reduceOnly", "true")]
    assert position_params(make_order(position_side="LONG"), hedge_mode=False) == []


class Venue:
    """Answers positionSide/dual with `dual` and records the order POSTs' parameters."""

    def __init__(self, dual: bool) -> None:
        self.dual = dual
        self.mode_queries = 0
        self.posts: list[dict[str, str]] = []
        self.reject_next: bool = False

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/fapi/v1/positionSide/dual":
            self.mode_queries += 1
            return httpx.Response(200, content=json.dumps({"dualSidePosition": self.dual}).encode())
        params = {k: v[0] for k, v in parse_qs(request.url.query.decode()).items()}
        self.posts.append(params)
        if self.reject_next:
            self.reject_next = False
            body = {"code": -4061, "msg": "Order's position side does not match user's setting."}
            return httpx.Response(400, content=json.dumps(body).encode())
        return httpx.Response(200, content=json.dumps({"status": "NEW", "orderId": 1}).encode())


def _client(venue: Venue) -> BinanceClient:
    return BinanceClient(
        "http://exchange.test", api_key="k", secret_key="s", transport=HandlerTransport(venue.handle)
    )


async def test_a_worker_client_asks_once_then_sends_the_hedge_side() -> None:
    venue = Venue(dual=True)
    client = _client(venue)
    client.forget_position_mode()
    await client.new_order(make_order(side=Side.SELL, reduce_only=True))
    await client.new_order(make_order(side=Side.SELL))
    assert venue.mode_queries == 1
    assert [(p.get("positionSide"), p.get("reduceOnly")) for p in venue.posts] == [
        ("LONG", None),
        ("SHORT", None),
    ]


async def test_a_4061_makes_the_next_order_ask_for_the_mode_again() -> None:
    venue = Venue(dual=False)
    client = _client(venue)
    assert await client.position_mode() == "one-way"
    venue.dual, venue.reject_next = True, True  # the account was switched to hedge mode meanwhile
    with pytest.raises(errors.OrderRejected):
        await client.new_order(make_order())
    await client.new_order(make_order())
    assert venue.mode_queries == 2
    assert venue.posts[-1]["positionSide"] == "LONG"
