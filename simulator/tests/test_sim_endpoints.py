"""The remaining endpoints: test order, open orders, cancel all, batches, amend, trades, account, algo."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from sim_helpers import LIMIT, Sim, next_event


async def test_order_test_validates_without_effect(sim: Sim) -> None:
    r = await sim.signed("POST", "/fapi/v1/order/test", symbol="BTCUSDT", **LIMIT)
    assert r.status_code == 200 and r.json() == {}
    r = await sim.signed("POST", "/fapi/v1/order/test", symbol="BTCUSDT", **{**LIMIT, "price": "49000.05"})
    assert r.json()["code"] == -4014
    assert await sim.admin_get("orders") == []


async def test_open_orders_open_order_and_cancel_all(sim: Sim) -> None:
    await sim.order(**LIMIT, newClientOrderId="o-1")
    await sim.order(**{**LIMIT, "price": "48000"}, newClientOrderId="o-2")
    await sim.order(
        symbol="ETHUSDT",
        side="SELL",
        type="LIMIT",
        timeInForce="GTC",
        quantity="0.100",
        price="3100",
        newClientOrderId="o-3",
    )
    await sim.order(side="BUY", type="MARKET", quantity="0.010")
    btc = (await sim.signed("GET", "/fapi/v1/openOrders", symbol="BTCUSDT")).json()
    assert [o["clientOrderId"] for o in btc] == ["o-1", "o-2"]
    every = (await sim.signed("GET", "/fapi/v1/openOrders")).json()
    assert len(every) == 3
    r = await sim.signed("GET", "/fapi/v1/openOrder", symbol="ETHUSDT", origClientOrderId="o-3")
    assert r.json()["price"] == "3100.00"
    r = await sim.signed("DELETE", "/fapi/v1/allOpenOrders", symbol="BTCUSDT")
    assert r.status_code == 200
    assert r.json() == {"code": 200, "msg": "The operation of cancel all open order is done."}
    assert len((await sim.signed("GET", "/fapi/v1/openOrders")).json()) == 1
    r = await sim.signed("GET", "/fapi/v1/openOrder", symbol="BTCUSDT", origClientOrderId="o-1")
    assert r.json()["code"] == -2013
    r = await sim.signed("GET", "/fapi/v1/openOrders", symbol="NOPE")
    assert r.json()["code"] == -1121
    r = await sim.signed("GET", "/fapi/v1/allOrders", symbol="BTCUSDT")
    assert [o["status"] for o in r.json()] == ["CANCELED", "CANCELED", "FILLED"]


async def test_batch_orders(sim: Sim) -> None:
    items: list[dict[str, Any]] = [
        {"symbol": "BTCUSDT", **LIMIT, "newClientOrderId": "b-1"},
        {"symbol": "BTCUSDT", **LIMIT, "price": "49000.05"},
        {"symbol": "BTCUSDT", **LIMIT, "timeInForce": "GTX", "price": "50100"},
        {"symbol": "BTCUSDT", **LIMIT, "type": "STOP_MARKET"},
        {
            "symbol": "BTCUSDT",
            "side": "SELL",
            "type": "MARKET",
            "quantity": "0.010",
            "newOrderRespType": "RESULT",
        },
    ]
    r = await sim.signed("POST", "/fapi/v1/batchOrders", batchOrders=json.dumps(items))
    assert r.status_code == 200
    out = r.json()
    assert out[0]["clientOrderId"] == "b-1" and out[0]["status"] == "NEW"
    assert out[1] == {"code": -4014, "msg": "Price not increased by tick size."}
    assert out[2]["code"] == -5022 and out[3]["code"] == -4120
    assert out[4]["status"] == "FILLED"
    r = await sim.signed("POST", "/fapi/v1/batchOrders", batchOrders=json.dumps(items + items[:1]))
    assert r.status_code == 400 and r.json()["code"] == -1130
    r = await sim.signed("POST", "/fapi/v1/batchOrders", batchOrders="not json", in_body=True)
    assert r.json()["code"] == -1102


async def test_amend_order(sim: Sim) -> None:
    _, ws = await sim.user_stream()
    oid = (await sim.order(**LIMIT)).json()["orderId"]
    assert (await next_event(ws))["o"]["x"] == "NEW"
    r = await sim.signed(
        "PUT", "/fapi/v1/order", symbol="BTCUSDT", orderId=oid, side="BUY", quantity="0.020", price="49500"
    )
    assert r.status_code == 200, r.text
    assert r.json()["origQty"] == "0.020" and r.json()["price"] == "49500.00"
    ev = (await next_event(ws))["o"]
    assert ev["x"] == "AMENDMENT" and ev["q"] == "0.020"
    r = await sim.signed(
        "PUT", "/fapi/v1/order", symbol="BTCUSDT", orderId=oid, side="BUY", quantity="0.020", price="49500"
    )
    assert r.json() == {"code": -5027, "msg": "No need to modify the order."}
    # Amending across the reference price fills it.
    r = await sim.signed(
        "PUT", "/fapi/v1/order", symbol="BTCUSDT", orderId=oid, side="BUY", quantity="0.020", price="50000"
    )
    assert r.json()["status"] == "FILLED"
    r = await sim.signed(
        "PUT", "/fapi/v1/order", symbol="BTCUSDT", orderId=oid, side="BUY", quantity="0.030", price="50000"
    )
    assert r.json() == {"code": -2011, "msg": "Unknown order sent."}
    await ws.close()


async def test_user_trades_filters(sim: Sim) -> None:
    a = (await sim.order(side="BUY", type="MARKET", quantity="0.010")).json()["orderId"]
    await sim.order(side="BUY", type="MARKET", quantity="0.020")
    trades = (await sim.signed("GET", "/fapi/v1/userTrades", symbol="BTCUSDT", orderId=a)).json()
    assert len(trades) == 1 and trades[0]["orderId"] == a and trades[0]["buyer"] is True
    assert set(trades[0]) >= {
        "id",
        "price",
        "qty",
        "quoteQty",
        "commission",
        "commissionAsset",
        "realizedPnl",
        "side",
        "positionSide",
        "maker",
        "time",
        "symbol",
    }
    assert len((await sim.signed("GET", "/fapi/v1/userTrades", symbol="BTCUSDT")).json()) == 2


async def test_account_and_positions(sim: Sim) -> None:
    await sim.order(symbol="ETHUSDT", side="SELL", type="MARKET", quantity="1.000")
    v2 = (await sim.signed("GET", "/fapi/v2/account")).json()
    assert {"totalWalletBalance", "availableBalance", "assets", "positions", "canTrade"} <= set(v2)
    assert len(v2["positions"]) == len(sim.config.symbols) and v2["assets"][0]["asset"] == "USDT"
    v3 = (await sim.signed("GET", "/fapi/v3/account")).json()
    assert [p["symbol"] for p in v3["positions"]] == ["ETHUSDT"] and "canTrade" not in v3
    risk = (await sim.signed("GET", "/fapi/v2/positionRisk")).json()
    assert len(risk) == len(sim.config.symbols)
    eth = next(p for p in risk if p["symbol"] == "ETHUSDT")
    assert (
        eth["positionAmt"] == "-1.000"
        and Decimal(eth["entryPrice"]) == 3000
        and eth["positionSide"] == "BOTH"
    )
    assert len((await sim.signed("GET", "/fapi/v3/positionRisk")).json()) == 1
    bal = (await sim.signed("GET", "/fapi/v2/balance")).json()
    assert bal[0]["asset"] == "USDT"
    fee = Decimal("3000") * Decimal("0.0005")
    assert Decimal(bal[0]["balance"]) == Decimal(100000) - fee


async def test_algo_orders(sim: Sim) -> None:
    _, ws = await sim.user_stream()
    base: dict[str, Any] = {
        "algoType": "CONDITIONAL",
        "symbol": "BTCUSDT",
        "side": "BUY",
        "quantity": "0.010",
    }
    r = await sim.signed("POST", "/fapi/v1/algoOrder", **base, type="STOP_MARKET", triggerPrice="49000")
    assert r.json() == {"code": -2021, "msg": "Order would immediately trigger."}
    r = await sim.signed(
        "POST", "/fapi/v1/algoOrder", **base, type="STOP_MARKET", triggerPrice="51000", clientAlgoId="algo-1"
    )
    assert r.status_code == 200, r.text
    algo = r.json()
    assert (
        algo["algoStatus"] == "NEW"
        and algo["orderType"] == "STOP_MARKET"
        and algo["clientAlgoId"] == "algo-1"
    )
    assert (await next_event(ws))["e"] == "ALGO_UPDATE"
    q = await sim.signed("GET", "/fapi/v1/algoOrder", clientAlgoId="algo-1")
    assert q.json()["algoId"] == algo["algoId"]
    opened = (await sim.signed("GET", "/fapi/v1/openAlgoOrders", symbol="BTCUSDT")).json()
    assert [o["algoId"] for o in opened] == [algo["algoId"]]
    await sim.set_price("BTCUSDT", "51000")
    q = await sim.signed("GET", "/fapi/v1/algoOrder", algoId=algo["algoId"])
    assert q.json()["algoStatus"] == "FINISHED" and q.json()["actualOrderId"]
    orders = await sim.admin_get("orders")
    assert len(orders) == 1 and orders[0]["type"] == "MARKET" and orders[0]["status"] == "FILLED"
    kinds = [(await next_event(ws)) for _ in range(5)]
    assert [e["e"] for e in kinds] == [
        "ALGO_UPDATE",
        "ORDER_TRADE_UPDATE",
        "ORDER_TRADE_UPDATE",
        "ACCOUNT_UPDATE",
        "ALGO_UPDATE",
    ]
    assert kinds[0]["o"]["X"] == "TRIGGERED" and kinds[4]["o"]["X"] == "FINISHED"
    r = await sim.signed(
        "POST",
        "/fapi/v1/algoOrder",
        **base,
        type="TAKE_PROFIT",
        price="50000",
        triggerPrice="50000",
        clientAlgoId="algo-2",
    )
    assert r.status_code == 200, r.text
    c = await sim.signed("DELETE", "/fapi/v1/algoOrder", clientAlgoId="algo-2")
    assert c.json()["code"] == "200" and c.json()["msg"] == "success"
    c = await sim.signed("DELETE", "/fapi/v1/algoOrder", clientAlgoId="algo-2")
    assert c.json()["code"] == -2011
    q = await sim.signed("GET", "/fapi/v1/algoOrder", algoId=1)
    assert q.json()["code"] == -2013
    assert len((await sim.signed("GET", "/fapi/v1/allAlgoOrders", symbol="BTCUSDT")).json()) == 2
    r = await sim.signed("POST", "/fapi/v1/algoOrder", **base, type="LIMIT", triggerPrice="52000")
    assert r.json()["code"] == -1116
    await sim.signed("POST", "/fapi/v1/algoOrder", **base, type="STOP_MARKET", triggerPrice="53000")
    r = await sim.signed("DELETE", "/fapi/v1/algoOpenOrders", symbol="BTCUSDT")
    assert r.json()["code"] == 200
    assert (await sim.signed("GET", "/fapi/v1/openAlgoOrders")).json() == []
    await ws.close()


async def test_trailing_stop(sim: Sim) -> None:
    base: dict[str, Any] = {
        "algoType": "CONDITIONAL",
        "symbol": "BTCUSDT",
        "side": "SELL",
        "quantity": "0.010",
    }
    await sim.order(side="BUY", type="MARKET", quantity="0.010")
    r = await sim.signed(
        "POST",
        "/fapi/v1/algoOrder",
        **base,
        type="TRAILING_STOP_MARKET",
        callbackRate="1",
        activatePrice="50500",
        reduceOnly="true",
    )
    assert r.status_code == 200, r.text
    for price in ("50600", "51000", "50800"):
        await sim.set_price("BTCUSDT", price)
    assert (await sim.signed("GET", "/fapi/v1/openAlgoOrders")).json() != []
    await sim.set_price("BTCUSDT", "50480")
    assert (await sim.signed("GET", "/fapi/v1/openAlgoOrders")).json() == []
    risk = (await sim.signed("GET", "/fapi/v2/positionRisk", symbol="BTCUSDT")).json()
    assert risk[0]["positionAmt"] == "0.000"


async def test_small_endpoints(sim: Sim) -> None:
    assert (await sim.http.get("/fapi/v1/ping")).json() == {}
    prices = (await sim.http.get("/fapi/v2/ticker/price")).json()
    assert {p["symbol"] for p in prices} >= {"BTCUSDT", "ETHUSDT"}
    assert (await sim.signed("GET", "/fapi/v1/positionSide/dual")).json() == {"dualSidePosition": False}
    rate = (await sim.signed("GET", "/fapi/v1/commissionRate", symbol="ETHUSDT")).json()
    assert rate == {"symbol": "ETHUSDT", "makerCommissionRate": "0.0002", "takerCommissionRate": "0.0005"}
    r = await sim.http.get("/fapi/v1/premiumIndex", params={"symbol": "NOPE"})
    assert r.json()["code"] == -1121
