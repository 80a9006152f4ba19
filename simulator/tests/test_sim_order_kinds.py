"""The simulator's conditional-order extras (working type, price protection, close-position) and
PUT /fapi/v1/order's answers, as the service relies on them."""

from __future__ import annotations

from typing import Any

from sim_helpers import Sim, next_event

STOP: dict[str, Any] = {"algoType": "CONDITIONAL", "symbol": "BTCUSDT", "type": "STOP_MARKET"}


async def test_working_type_and_price_protect_are_echoed(sim: Sim) -> None:
    _, ws = await sim.user_stream()
    r = await sim.signed(
        "POST",
        "/fapi/v1/algoOrder",
        **STOP,
        side="SELL",
        quantity="0.010",
        triggerPrice="49000",
        workingType="MARK_PRICE",
        priceProtect="TRUE",
    )
    assert r.status_code == 200, r.text
    assert r.json()["workingType"] == "MARK_PRICE" and r.json()["priceProtect"] is True
    event = (await next_event(ws))["o"]
    assert event["wt"] == "MARK_PRICE" and event["pP"] is True
    bad = await sim.signed(
        "POST",
        "/fapi/v1/algoOrder",
        **STOP,
        side="SELL",
        quantity="0.010",
        triggerPrice="49000",
        workingType="LAST",
    )
    assert bad.json()["code"] == -1130
    await ws.close()


async def test_close_position_closes_the_whole_position_on_trigger(sim: Sim) -> None:
    await sim.order(side="BUY", type="MARKET", quantity="0.020")
    r = await sim.signed(
        "POST", "/fapi/v1/algoOrder", **STOP, side="SELL", triggerPrice="49000", closePosition="true"
    )
    assert r.status_code == 200, r.text
    assert r.json()["closePosition"] is True
    await sim.set_price("BTCUSDT", "48900")
    algo = (await sim.signed("GET", "/fapi/v1/algoOrder", algoId=r.json()["algoId"])).json()
    assert algo["algoStatus"] == "FINISHED"
    risk = (await sim.signed("GET", "/fapi/v2/positionRisk", symbol="BTCUSDT")).json()
    assert risk[0]["positionAmt"] == "0.000"


async def test_close_position_without_a_position_is_rejected_on_trigger(sim: Sim) -> None:
    r = await sim.signed(
        "POST", "/fapi/v1/algoOrder", **STOP, side="SELL", triggerPrice="49000", closePosition="true"
    )
    assert r.status_code == 200, r.text
    await sim.set_price("BTCUSDT", "48900")
    algo = (await sim.signed("GET", "/fapi/v1/algoOrder", algoId=r.json()["algoId"])).json()
    assert algo["algoStatus"] == "REJECTED"


async def test_close_position_takes_no_quantity_and_only_market_kinds(sim: Sim) -> None:
    with_qty = await sim.signed(
        "POST",
        "/fapi/v1/algoOrder",
        **STOP,
        side="SELL",
        quantity="0.010",
        triggerPrice="49000",
        closePosition="true",
    )
    assert with_qty.json()["code"] == -1130
    stop_limit = {**STOP, "type": "STOP"}
    limit_kind = await sim.signed(
        "POST",
        "/fapi/v1/algoOrder",
        **stop_limit,
        side="SELL",
        price="48000",
        triggerPrice="49000",
        closePosition="true",
    )
    assert limit_kind.json()["code"] == -1130


async def test_amend_answers(sim: Sim) -> None:
    placed = (
        await sim.order(
            side="BUY",
            type="LIMIT",
            timeInForce="GTC",
            quantity="0.010",
            price="45000",
            newClientOrderId="am-1",
        )
    ).json()
    amend: dict[str, Any] = {"symbol": "BTCUSDT", "origClientOrderId": "am-1", "side": "BUY"}
    r = await sim.signed("PUT", "/fapi/v1/order", **amend, quantity="0.020", price="45100")
    assert r.status_code == 200, r.text
    assert (
        r.json()["price"] == "45100.00"
        and r.json()["origQty"] == "0.020"
        and r.json()["orderId"] == placed["orderId"]
    )
    same = await sim.signed("PUT", "/fapi/v1/order", **amend, quantity="0.020", price="45100")
    assert same.json() == {"code": -5027, "msg": "No need to modify the order."}
    missing = await sim.signed(
        "PUT", "/fapi/v1/order", **{**amend, "origClientOrderId": "nope"}, quantity="1", price="1"
    )
    assert missing.json()["code"] == -2013


async def test_admin_lists_algo_orders_and_the_order_a_triggered_one_placed(sim: Sim) -> None:
    placed = await sim.signed(
        "POST",
        "/fapi/v1/algoOrder",
        **STOP,
        side="SELL",
        quantity="0.010",
        triggerPrice="49000",
        clientAlgoId="t-1",
    )
    assert placed.status_code == 200, placed.text
    [waiting] = await sim.admin_get("algo-orders", clientAlgoId="t-1")
    assert waiting["algoStatus"] == "NEW" and waiting["actualOrderId"] == "" and waiting["account"]
    await sim.set_price("BTCUSDT", "48900")
    [done] = await sim.admin_get("algo-orders", clientAlgoId="t-1")
    assert done["algoStatus"] == "FINISHED" and done["algoId"] == placed.json()["algoId"]
    [market] = [o for o in await sim.admin_get("orders") if str(o["orderId"]) == str(done["actualOrderId"])]
    assert market["type"] == "MARKET" and market["status"] == "FILLED"
    assert await sim.admin_get("algo-orders", clientAlgoId="none") == []
