"""Public endpoints: exchangeInfo shapes and values."""

from __future__ import annotations

from typing import Any

from sim_helpers import Sim


def _filters(symbol: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["filterType"]: f for f in symbol["filters"]}


async def test_exchange_info_shapes(sim: Sim) -> None:
    r = await sim.http.get("/fapi/v1/exchangeInfo")
    assert r.status_code == 200
    info = r.json()
    assert {"timezone", "serverTime", "rateLimits", "exchangeFilters", "assets", "symbols"} <= set(info)
    limits = {(x["rateLimitType"], x["interval"], x["intervalNum"]): x["limit"] for x in info["rateLimits"]}
    assert limits == {
        ("REQUEST_WEIGHT", "MINUTE", 1): 2400,
        ("ORDERS", "MINUTE", 1): 1200,
        ("ORDERS", "SECOND", 10): 300,
    }
    symbols = {s["symbol"]: s for s in info["symbols"]}
    btc, eth = symbols["BTCUSDT"], symbols["ETHUSDT"]
    f = _filters(btc)
    assert f["PRICE_FILTER"] == {
        "filterType": "PRICE_FILTER",
        "minPrice": "556.80",
        "maxPrice": "4529764",
        "tickSize": "0.10",
    }
    assert f["LOT_SIZE"] == {
        "filterType": "LOT_SIZE",
        "minQty": "0.001",
        "maxQty": "1000",
        "stepSize": "0.001",
    }
    assert f["MARKET_LOT_SIZE"]["maxQty"] == "120" and f["MARKET_LOT_SIZE"]["stepSize"] == "0.001"
    assert f["MIN_NOTIONAL"] == {"filterType": "MIN_NOTIONAL", "notional": "100"}
    assert set(f["PERCENT_PRICE"]) == {"filterType", "multiplierUp", "multiplierDown", "multiplierDecimal"}
    assert f["MAX_NUM_ORDERS"]["limit"] == 200
    assert btc["pricePrecision"] == 2 and btc["quantityPrecision"] == 3
    assert "LIMIT" in btc["orderTypes"] and "GTX" in btc["timeInForce"]
    fe = _filters(eth)
    assert fe["PRICE_FILTER"]["tickSize"] == "0.01" and fe["LOT_SIZE"]["stepSize"] == "0.001"
    assert fe["LOT_SIZE"]["minQty"] == "0.001" and fe["MIN_NOTIONAL"]["notional"] == "20"
    assert r.headers["X-MBX-USED-WEIGHT-1M"] == "1"


async def test_unknown_path_404(sim: Sim) -> None:
    r = await sim.http.get("/fapi/v1/nothing")
    assert r.status_code == 404


async def test_reference_price_is_mark_price(sim: Sim) -> None:
    await sim.set_price("ETHUSDT", "3100.5")
    r = await sim.http.get("/fapi/v1/premiumIndex", params={"symbol": "ETHUSDT"})
    assert r.json()["markPrice"] == "3100.5"
    r = await sim.http.get("/fapi/v1/ticker/price", params={"symbol": "ETHUSDT"})
    assert r.json()["price"] == "3100.5"
