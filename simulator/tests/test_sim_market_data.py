"""Public market-data REST endpoints: Binance's shapes, weights, and data consistent with the price walk."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import pytest

from sim_helpers import Sim


async def _get(sim: Sim, path: str, **params: Any) -> tuple[Any, int]:
    r = await sim.http.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json(), int(r.headers["X-MBX-USED-WEIGHT-1M"])


async def _weight(sim: Sim, path: str, **params: Any) -> int:
    """Weight one call charges (the used-weight header before and after)."""
    _, before = await _get(sim, "/fapi/v1/ping")
    _, after = await _get(sim, path, **params)
    return after - before


async def _walk(sim: Sim, prices: list[str]) -> None:
    for p in prices:
        await sim.set_price("BTCUSDT", p)


@pytest.mark.parametrize(
    ("limit", "weight"), [(5, 2), (10, 2), (20, 2), (50, 2), (100, 5), (500, 10), (1000, 20), (None, 10)]
)
async def test_depth_shape_and_weight(sim: Sim, limit: int | None, weight: int) -> None:
    params = {"symbol": "BTCUSDT"} | ({"limit": limit} if limit else {})
    assert await _weight(sim, "/fapi/v1/depth", **params) == weight
    book, _ = await _get(sim, "/fapi/v1/depth", **params)
    assert set(book) == {"lastUpdateId", "E", "T", "bids", "asks"}
    assert isinstance(book["lastUpdateId"], int) and isinstance(book["E"], int)
    bids = [(Decimal(p), Decimal(q)) for p, q in book["bids"]]
    asks = [(Decimal(p), Decimal(q)) for p, q in book["asks"]]
    assert len(bids) == len(asks) == (limit or 500)
    assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)
    assert [p for p, _ in asks] == sorted(p for p, _ in asks)
    tick = Decimal("0.10")
    assert bids[0][0] <= Decimal(50000) <= asks[0][0] and 1 <= (asks[0][0] - bids[0][0]) / tick <= 3
    assert all(q > 0 and q % Decimal("0.001") == 0 for _, q in bids + asks)
    assert all(p % tick == 0 for p, _ in bids + asks)


async def test_book_follows_the_reference_price(sim: Sim) -> None:
    await sim.set_price("ETHUSDT", "3100.55")
    book, _ = await _get(sim, "/fapi/v1/depth", symbol="ETHUSDT", limit=5)
    assert Decimal(book["bids"][0][0]) <= Decimal("3100.55") <= Decimal(book["asks"][0][0])
    top, _ = await _get(sim, "/fapi/v1/ticker/bookTicker", symbol="ETHUSDT")
    assert set(top) == {"symbol", "bidPrice", "bidQty", "askPrice", "askQty", "time", "lastUpdateId"}
    assert top["bidPrice"] == book["bids"][0][0] and top["askPrice"] == book["asks"][0][0]
    every, _ = await _get(sim, "/fapi/v1/ticker/bookTicker")
    assert len(every) == 20
    assert await _weight(sim, "/fapi/v1/ticker/bookTicker", symbol="ETHUSDT") == 2
    assert await _weight(sim, "/fapi/v1/ticker/bookTicker") == 5


async def test_trades_and_agg_trades_follow_price_changes(sim: Sim) -> None:
    await _walk(sim, ["50010", "50020", "49990"])
    trades, _ = await _get(sim, "/fapi/v1/trades", symbol="BTCUSDT")
    assert trades and set(trades[0]) == {"id", "price", "qty", "quoteQty", "time", "isBuyerMaker"}
    assert [t["id"] for t in trades] == list(range(trades[0]["id"], trades[0]["id"] + len(trades)))
    assert {t["price"] for t in trades} == {"50010.00", "50020.00", "49990.00"}
    for t in trades:
        assert Decimal(t["quoteQty"]) == Decimal(t["price"]) * Decimal(t["qty"])
        assert t["isBuyerMaker"] == (t["price"] == "49990.00")  # the price fell: sellers took the bids
    aggs, _ = await _get(sim, "/fapi/v1/aggTrades", symbol="BTCUSDT")
    assert [set(a) for a in aggs] == [{"a", "p", "q", "f", "l", "T", "m"}] * 3
    for a in aggs:
        parts = [t for t in trades if a["f"] <= t["id"] <= a["l"]]
        assert {t["price"] for t in parts} == {a["p"]}
        assert sum(Decimal(t["qty"]) for t in parts) == Decimal(a["q"])
    later, _ = await _get(sim, "/fapi/v1/aggTrades", symbol="BTCUSDT", fromId=aggs[1]["a"])
    assert later == aggs[1:]
    last, _ = await _get(sim, "/fapi/v1/trades", symbol="BTCUSDT", limit=1)
    assert last == trades[-1:]
    assert await _weight(sim, "/fapi/v1/trades", symbol="BTCUSDT") == 5
    assert await _weight(sim, "/fapi/v1/aggTrades", symbol="BTCUSDT") == 20


@pytest.mark.parametrize("path", ["/fapi/v1/klines", "/fapi/v1/markPriceKlines", "/fapi/v1/indexPriceKlines"])
@pytest.mark.parametrize("interval", ["1m", "5m", "1h", "1d", "1w", "1M"])
async def test_klines_are_continuous(sim: Sim, path: str, interval: str) -> None:
    await _walk(sim, ["50100", "49800", "50000.3"])
    rows, _ = await _get(sim, path, symbol="BTCUSDT", interval=interval, limit=60)
    assert len(rows) == 60
    for row in rows:
        assert len(row) == 12 and isinstance(row[0], int) and isinstance(row[6], int)
        o, h, lo, c = (Decimal(x) for x in row[1:5])
        assert h >= max(o, c) and lo <= min(o, c) and lo > 0
    for prev, nxt in itertools.pairwise(rows):
        assert prev[4] == nxt[1]  # close == next open
        assert prev[6] + 1 == nxt[0]  # close time is the next bucket's open - 1
    last = rows[-1]
    assert last[4] == "50000.30" and Decimal(last[2]) >= Decimal("50100")
    again, _ = await _get(sim, path, symbol="BTCUSDT", interval=interval, startTime=rows[10][0], limit=5)
    assert [r[0] for r in again] == [r[0] for r in rows[10:15]] and again[0][1] == rows[10][1]


async def test_klines_volume_counts_the_public_trades(sim: Sim) -> None:
    await _walk(sim, ["50100", "49800"])
    trades, _ = await _get(sim, "/fapi/v1/trades", symbol="BTCUSDT")
    (row,), _ = await _get(sim, "/fapi/v1/klines", symbol="BTCUSDT", interval="1m", limit=1)
    if row[0] <= trades[0]["time"]:  # not split across a minute boundary
        assert Decimal(row[5]) == sum(Decimal(t["qty"]) for t in trades) and row[8] == len(trades)
        buys = sum(Decimal(t["qty"]) for t in trades if not t["isBuyerMaker"])
        assert Decimal(row[9]) == buys


@pytest.mark.parametrize(("limit", "weight"), [(99, 1), (100, 2), (499, 2), (500, 5), (1000, 5), (1500, 10)])
async def test_klines_weight(sim: Sim, limit: int, weight: int) -> None:
    assert await _weight(sim, "/fapi/v1/klines", symbol="BTCUSDT", interval="1m", limit=limit) == weight


async def test_klines_errors(sim: Sim) -> None:
    r = await sim.http.get("/fapi/v1/klines", params={"symbol": "BTCUSDT", "interval": "7m"})
    assert r.status_code == 400 and r.json()["code"] == -1120
    r = await sim.http.get("/fapi/v1/klines", params={"symbol": "NOPE", "interval": "1m"})
    assert r.json()["code"] == -1121
    r = await sim.http.get("/fapi/v1/klines", params={"interval": "1m"})
    assert r.json()["code"] == -1102


async def test_ticker_24hr(sim: Sim) -> None:
    await _walk(sim, ["50100", "49900.5"])
    t, _ = await _get(sim, "/fapi/v1/ticker/24hr", symbol="BTCUSDT")
    assert set(t) == {
        "symbol", "priceChange", "priceChangePercent", "weightedAvgPrice", "lastPrice", "lastQty",
        "openPrice", "highPrice", "lowPrice", "volume", "quoteVolume", "openTime", "closeTime",
        "firstId", "lastId", "count",
    }  # fmt: skip
    assert t["lastPrice"] == "49900.50"
    assert Decimal(t["priceChange"]) == Decimal(t["lastPrice"]) - Decimal(t["openPrice"])
    assert Decimal(t["highPrice"]) >= Decimal("50100") and Decimal(t["lowPrice"]) <= Decimal("49900.5")
    assert t["closeTime"] - t["openTime"] == 86_400_000
    trades, _ = await _get(sim, "/fapi/v1/trades", symbol="BTCUSDT")
    assert t["lastId"] == trades[-1]["id"] and t["lastQty"] == trades[-1]["qty"]
    every, _ = await _get(sim, "/fapi/v1/ticker/24hr")
    assert len(every) == 20 and {x["symbol"] for x in every} >= {"BTCUSDT", "ETHUSDT"}
    assert await _weight(sim, "/fapi/v1/ticker/24hr", symbol="BTCUSDT") == 1
    assert await _weight(sim, "/fapi/v1/ticker/24hr") == 40


async def test_ticker_price_v1_and_v2(sim: Sim) -> None:
    await sim.set_price("BTCUSDT", "50123.4")
    for path in ("/fapi/v1/ticker/price", "/fapi/v2/ticker/price"):
        doc, _ = await _get(sim, path, symbol="BTCUSDT")
        assert set(doc) == {"symbol", "price", "time"} and Decimal(doc["price"]) == Decimal("50123.4")


async def test_premium_index_funding_rate_and_open_interest(sim: Sim) -> None:
    p, _ = await _get(sim, "/fapi/v1/premiumIndex", symbol="BTCUSDT")
    assert {"markPrice", "indexPrice", "lastFundingRate", "nextFundingTime", "interestRate", "time"} <= set(p)
    assert p["nextFundingTime"] % (8 * 3_600_000) == 0
    rates, _ = await _get(sim, "/fapi/v1/fundingRate", symbol="BTCUSDT", limit=5)
    assert len(rates) == 5 and set(rates[0]) == {"symbol", "fundingTime", "fundingRate", "markPrice"}
    times = [r["fundingTime"] for r in rates]
    assert times == sorted(times) and all(b - a == 8 * 3_600_000 for a, b in itertools.pairwise(times))
    assert times[-1] < p["nextFundingTime"] and rates[-1]["fundingRate"] == p["lastFundingRate"]
    oi, _ = await _get(sim, "/fapi/v1/openInterest", symbol="BTCUSDT")
    assert set(oi) == {"symbol", "openInterest", "time"} and Decimal(oi["openInterest"]) > 0


async def test_market_data_is_reproducible_from_the_seed(make_sim: Any) -> None:
    a, b = await make_sim(seed=7), await make_sim(seed=7)
    for s in (a, b):
        await _walk(s, ["50100", "49900"])
    ta, _ = await _get(a, "/fapi/v1/trades", symbol="BTCUSDT")
    tb, _ = await _get(b, "/fapi/v1/trades", symbol="BTCUSDT")
    assert [(t["id"], t["qty"], t["price"]) for t in ta] == [(t["id"], t["qty"], t["price"]) for t in tb]
    ka, _ = await _get(a, "/fapi/v1/klines", symbol="BTCUSDT", interval="1h", limit=48)
    kb, _ = await _get(b, "/fapi/v1/klines", symbol="BTCUSDT", interval="1h", limit=48)
    assert [k[:5] for k in ka[:-1]] == [k[:5] for k in kb[:-1]]
