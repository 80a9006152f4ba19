"""Book mode (the default): our orders trade against each symbol's order book.

The book is a pure function of (seed, symbol, reference price, time), so each test checks the fills
against the levels the book held at the fill's own timestamp (``usdm_simulator.book``), not a snapshot taken
a moment earlier.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import ccxt.async_support as ccxt_async
import pytest

from sim_helpers import Sim, ccxt_client, next_event
from usdm_simulator.book import level_size_at, top_of_book
from usdm_simulator.config import SimulatorConfig
from usdm_simulator.liquidity import REFILL_MS
from usdm_simulator.symbols import SymbolSpec, build_specs

SEED = SimulatorConfig().seed  # what the book_sim fixture runs with: the book is a function of it
TICK = Decimal("0.10")


def _spec(sim: Sim) -> SymbolSpec:
    return build_specs(["BTCUSDT"], sim.config.reference_prices, {})["BTCUSDT"]


async def _trades(sim: Sim, order_id: int, account: Any = None) -> list[dict[str, Any]]:
    r = await sim.signed("GET", "/fapi/v1/userTrades", account=account, symbol="BTCUSDT", orderId=order_id)
    assert r.status_code == 200, r.text
    return list(r.json())


async def _gtc(sim: Sim, side: str, quantity: str, price: Decimal, **extra: Any) -> dict[str, Any]:
    """Place a GTC LIMIT order for BTCUSDT; return the reply."""
    r = await sim.order(
        side=side, type="LIMIT", timeInForce="GTC", quantity=quantity, price=str(price), **extra
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _order(sim: Sim, client_id: str) -> dict[str, Any]:
    return dict((await sim.admin_get("orders", clientOrderId=client_id))[0])


async def test_market_order_larger_than_the_top_level_walks_the_book(book_sim: Sim) -> None:
    spec = _spec(book_sim)
    ref = Decimal("50000")
    r = await book_sim.order(side="BUY", type="MARKET", quantity="2.000", newOrderRespType="RESULT")
    assert r.status_code == 200, r.text
    order = r.json()
    assert order["status"] == "FILLED" and order["executedQty"] == "2.000"
    trades = await _trades(book_sim, order["orderId"])
    prices = [Decimal(t["price"]) for t in trades]
    assert len(set(prices)) >= 2, "a 2 BTC order is larger than any one level"
    assert prices == sorted(prices) and all(t["maker"] is False for t in trades)
    # Each level but the last is taken whole, at the size the book showed then; the first is the best ask.
    at = trades[0]["time"]
    assert prices[0] in {top_of_book(spec, SEED, ref, at - d)[1] * spec.tick_size for d in range(20)}

    def sizes(t: dict[str, Any]) -> set[Decimal]:
        # The walk read the book a few ms before it stamped the fill, perhaps in the period before.
        return {level_size_at(spec, SEED, ref, t["time"] - d, "asks", Decimal(t["price"])) for d in range(20)}

    for t in trades[:-1]:
        assert Decimal(t["qty"]) in sizes(t)
    assert Decimal(trades[-1]["qty"]) <= max(sizes(trades[-1]))
    # Slippage: the average price is the fills' VWAP, above the best ask.
    vwap = sum(Decimal(t["price"]) * Decimal(t["qty"]) for t in trades) / Decimal("2.000")
    assert abs(Decimal(order["avgPrice"]) - vwap) < Decimal("0.001") and vwap > prices[0]
    # The fills are on the public tape, as taker buys at those prices.
    tape = (await book_sim.http.get("/fapi/v1/trades", params={"symbol": "BTCUSDT"})).json()
    ours = [t for t in tape if t["isBuyerMaker"] is False and Decimal(t["price"]) in set(prices)]
    assert sum(Decimal(t["qty"]) for t in ours) == Decimal("2.000")


async def test_taken_levels_show_in_the_depth_until_they_refill(book_sim: Sim) -> None:
    """Depth shows each level our order took from as the market's size less what it took (the book is
    a function of time, so the size is the one at the depth's own time ``T``), then full again."""
    spec, ref = _spec(book_sim), Decimal("50000")
    r = await book_sim.order(side="SELL", type="MARKET", quantity="0.500", newOrderRespType="RESULT")
    trades = await _trades(book_sim, r.json()["orderId"])
    taken: dict[Decimal, Decimal] = {}
    for t in trades:
        taken[Decimal(t["price"])] = taken.get(Decimal(t["price"]), Decimal(0)) + Decimal(t["qty"])

    async def shown() -> tuple[int, dict[Decimal, Decimal]]:
        depth = (await book_sim.http.get("/fapi/v1/depth", params={"symbol": "BTCUSDT", "limit": 50})).json()
        return depth["T"], {Decimal(p): Decimal(q) for p, q in depth["bids"]}

    at, bids = await shown()
    for price, qty in taken.items():
        left = max(level_size_at(spec, SEED, ref, at, "bids", price) - qty, Decimal(0))
        assert bids.get(price, Decimal(0)) == left
    await book_sim.http.post("/admin/clock", json={"advance_ms": REFILL_MS * 3})
    at, bids = await shown()
    for price in taken:
        assert bids.get(price, Decimal(0)) == level_size_at(spec, SEED, ref, at, "bids", price)
    # Nothing is depleted any more: the best levels are the market's full sizes (the taken prices may
    # have left the bid side meanwhile, as the spread moves).
    best = list(bids.items())[:10]
    assert len(best) == 10 and all(q == level_size_at(spec, SEED, ref, at, "bids", p) for p, q in best)


async def test_resting_order_fills_partly_then_fully_as_trades_pass_through(book_sim: Sim) -> None:
    """A BUY resting at 49999.0 queues behind the market's size there; each fall of the price to it
    prints trades that first eat the queue, then fill it in parts; a fall below it fills the rest."""
    spec = _spec(book_sim)
    price = Decimal("49999.00")
    placed = await _gtc(book_sim, "BUY", "0.500", price, newClientOrderId="rest")
    assert placed["status"] == "NEW"
    queue = level_size_at(spec, SEED, Decimal("50000"), placed["updateTime"], "bids", price)
    assert queue > 0
    _, ws = await book_sim.user_stream()
    partial_fills: list[Decimal] = []
    for _ in range(400):
        await book_sim.set_price("BTCUSDT", "49999.5")  # up: taker buys, nothing for a resting BUY
        await book_sim.set_price("BTCUSDT", "49999.0")  # down to it: taker sells at its price
        order = await _order(book_sim, "rest")
        executed = Decimal(order["executedQty"])
        if executed and (not partial_fills or executed != partial_fills[-1]):
            partial_fills.append(executed)
        if len(partial_fills) >= 2:
            break
    assert len(partial_fills) >= 2 and order["status"] == "PARTIALLY_FILLED", partial_fills
    # Nothing filled before the market's trades at this price had used up the queue ahead of it.
    tape = (await book_sim.http.get("/fapi/v1/trades", params={"symbol": "BTCUSDT", "limit": 1000})).json()
    first_fill = (await _trades(book_sim, placed["orderId"]))[0]
    sold_before = sum(
        Decimal(t["qty"])
        for t in tape
        if t["isBuyerMaker"] and Decimal(t["price"]) == price and t["time"] <= first_fill["time"]
    )
    assert sold_before >= queue + Decimal(first_fill["qty"])
    await book_sim.set_price("BTCUSDT", "49990.0")  # through it: its level is swept
    order = await _order(book_sim, "rest")
    assert order["status"] == "FILLED" and order["executedQty"] == "0.500"
    trades = await _trades(book_sim, placed["orderId"])
    assert all(t["maker"] is True and Decimal(t["price"]) == price for t in trades) and len(trades) >= 3
    statuses = []
    while True:
        event = await next_event(ws)
        if event.get("e") == "ORDER_TRADE_UPDATE" and event["o"]["x"] == "TRADE":
            statuses.append(event["o"]["X"])
            if event["o"]["X"] == "FILLED":
                break
    assert statuses[-1] == "FILLED" and set(statuses[:-1]) == {"PARTIALLY_FILLED"}
    await ws.close()


async def test_crossing_limit_takes_to_its_price_then_rests(book_sim: Sim) -> None:
    limit = Decimal("50000.30")
    order = await _gtc(book_sim, "BUY", "5.000", limit, newOrderRespType="RESULT")
    assert order["status"] == "PARTIALLY_FILLED"
    trades = await _trades(book_sim, order["orderId"])
    assert all(Decimal(t["price"]) <= limit for t in trades)
    depth = (await book_sim.http.get("/fapi/v1/depth", params={"symbol": "BTCUSDT", "limit": 5})).json()
    best_bid, best_qty = (Decimal(x) for x in depth["bids"][0])
    assert best_bid == limit and best_qty >= Decimal("5.000") - Decimal(order["executedQty"])
    assert Decimal(depth["asks"][0][0]) > limit


async def test_fok_and_gtx_against_the_book(book_sim: Sim) -> None:
    fok = await book_sim.order(
        side="BUY", type="LIMIT", timeInForce="FOK", quantity="30.000", price="50000.20"
    )
    assert fok.json()["code"] == -5021
    gtx = await book_sim.order(side="SELL", type="LIMIT", timeInForce="GTX", quantity="0.010", price="49990")
    assert gtx.json()["code"] == -5022
    resting = await book_sim.order(
        side="SELL", type="LIMIT", timeInForce="GTX", quantity="0.010", price="50010"
    )
    assert resting.json()["status"] == "NEW"
    filled = await book_sim.order(
        side="BUY",
        type="LIMIT",
        timeInForce="FOK",
        quantity="0.010",
        price="50005",
        newOrderRespType="RESULT",
    )
    assert filled.json()["status"] == "FILLED"


async def _rest_at_best_ask(sim: Sim, client_id: str, account: Any = None) -> tuple[Decimal, Decimal]:
    """Rest a SELL of 0.010 at the best ask; return (price, market quantity ahead of it there)."""
    depth = (await sim.http.get("/fapi/v1/depth", params={"symbol": "BTCUSDT", "limit": 5})).json()
    price, market = (Decimal(x) for x in depth["asks"][0])
    placed = await _gtc(sim, "SELL", "0.010", price, account=account, newClientOrderId=client_id)
    assert placed["status"] == "NEW"
    return price, market


@pytest.mark.parametrize(
    ("mode", "maker_status", "taker_status"),
    [
        ("EXPIRE_MAKER", "EXPIRED_IN_MATCH", "FILLED"),
        ("EXPIRE_TAKER", "NEW", "EXPIRED_IN_MATCH"),
        ("EXPIRE_BOTH", "EXPIRED_IN_MATCH", "EXPIRED_IN_MATCH"),
        ("NONE", "FILLED", "FILLED"),
    ],
)
async def test_self_trade_prevention(book_sim: Sim, mode: str, maker_status: str, taker_status: str) -> None:
    """A BUY crossing up to 50100, big enough to reach the account's own resting SELL at the best ask."""
    await _rest_at_best_ask(book_sim, "mine")
    _, ws = await book_sim.user_stream()
    await _gtc(
        book_sim,
        "BUY",
        "3.000",
        Decimal(50100),
        selfTradePreventionMode=mode,
        newClientOrderId="taker",
        newOrderRespType="RESULT",
    )
    maker = await _order(book_sim, "mine")
    taker = await _order(book_sim, "taker")
    assert (maker["status"], taker["status"]) == (maker_status, taker_status)
    expired = []
    while True:
        try:
            event = await next_event(ws, timeout=0.5)
        except TimeoutError:
            break
        if event.get("e") == "ORDER_TRADE_UPDATE" and event["o"]["X"] == "EXPIRED_IN_MATCH":
            expired.append((event["o"]["c"], event["o"]["x"], event["o"]["er"]))
    statuses = {"mine": maker_status, "taker": taker_status}
    wanted = [(c, "EXPIRED", "1") for c, status in statuses.items() if status == "EXPIRED_IN_MATCH"]
    assert sorted(expired) == sorted(wanted)
    await ws.close()


async def test_another_accounts_resting_order_is_filled_as_maker(book_sim: Sim) -> None:
    other = book_sim.accounts[1]
    price, _ = await _rest_at_best_ask(book_sim, "theirs", account=other)
    r = await book_sim.order(side="BUY", type="MARKET", quantity="3.000", newOrderRespType="RESULT")
    assert r.json()["status"] == "FILLED"
    theirs = await _order(book_sim, "theirs")
    assert theirs["status"] == "FILLED"
    maker_trades = await _trades(book_sim, theirs["orderId"], account=other)
    assert [(t["maker"], Decimal(t["price"]), t["qty"]) for t in maker_trades] == [(True, price, "0.010")]
    taker_prices = [Decimal(t["price"]) for t in await _trades(book_sim, r.json()["orderId"])]
    assert price in taker_prices


async def test_ccxt_trades_against_the_book(book_sim: Sim) -> None:
    """ccxt's binanceusdm, only its URLs changed: a market order larger than the top level comes back
    with its fills at several prices, and the order book it then fetches shows the levels it took."""
    ex = ccxt_client(book_sim, ccxt_async)
    try:
        await ex.load_markets()
        before = await ex.fetch_order_book("BTC/USDT:USDT", 5)
        order = await ex.create_order("BTC/USDT:USDT", "market", "buy", 1.5)
        trades = await ex.fetch_my_trades("BTC/USDT:USDT")
        assert sum(t["amount"] for t in trades) == pytest.approx(1.5)
        assert len({t["price"] for t in trades}) >= 2 and all(t["takerOrMaker"] == "taker" for t in trades)
        fetched = await ex.fetch_order(order["id"], "BTC/USDT:USDT")
        assert fetched["status"] == "closed" and fetched["average"] > before["asks"][0][0]
        after = await ex.fetch_order_book("BTC/USDT:USDT", 5)
        assert after["asks"][0][0] > before["asks"][0][0]
    finally:
        await ex.close()
