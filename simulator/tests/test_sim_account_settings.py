"""Account settings and the dead-man switch at the simulator: shapes, weights, error codes, hedge mode."""

from __future__ import annotations

import asyncio
from typing import Any

from sim_helpers import LIMIT, Sim, next_event


async def _events_until(ws: Any, kind: str, count: int) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    while len(seen) < count:
        event = await next_event(ws)
        if event.get("e") == kind:
            seen.append(event)
    return seen


async def test_countdown_cancels_every_open_order_of_the_symbol(sim: Sim) -> None:
    await sim.order(**LIMIT, newClientOrderId="dm-1")
    await sim.order(**{**LIMIT, "price": "48000"}, newClientOrderId="dm-2")
    await sim.order(
        symbol="ETHUSDT",
        side="BUY",
        type="LIMIT",
        timeInForce="GTC",
        quantity="0.100",
        price="2900",
        newClientOrderId="dm-eth",
    )
    _, ws = await sim.user_stream()
    r = await sim.signed("POST", "/fapi/v1/countdownCancelAll", symbol="BTCUSDT", countdownTime=300)
    assert r.status_code == 200
    assert r.json() == {"symbol": "BTCUSDT", "countdownTime": "300"}
    assert int(r.headers["X-MBX-USED-WEIGHT-1M"]) >= 10
    assert (await sim.admin_get("state"))["accounts"][0]["countdowns"] == ["BTCUSDT"]
    canceled = await _events_until(ws, "ORDER_TRADE_UPDATE", 2)
    assert sorted(e["o"]["c"] for e in canceled) == ["dm-1", "dm-2"]
    assert {(e["o"]["x"], e["o"]["X"]) for e in canceled} == {("CANCELED", "CANCELED")}
    statuses = {o["clientOrderId"]: o["status"] for o in await sim.admin_get("orders")}
    assert statuses == {"dm-1": "CANCELED", "dm-2": "CANCELED", "dm-eth": "NEW"}
    assert (await sim.admin_get("state"))["accounts"][0]["countdowns"] == []
    await ws.close()


async def test_heartbeat_postpones_and_zero_stops_the_countdown(sim: Sim) -> None:
    await sim.order(**LIMIT, newClientOrderId="hb-1")
    for _ in range(4):  # re-armed every 0.15 s with a 0.4 s countdown: never fires
        await sim.signed("POST", "/fapi/v1/countdownCancelAll", symbol="BTCUSDT", countdownTime=400)
        await asyncio.sleep(0.15)
    r = await sim.signed("POST", "/fapi/v1/countdownCancelAll", symbol="BTCUSDT", countdownTime=0)
    assert r.json() == {"symbol": "BTCUSDT", "countdownTime": "0"}
    await asyncio.sleep(0.6)
    assert [o["status"] for o in await sim.admin_get("orders")] == ["NEW"]


async def test_countdown_parameter_errors(sim: Sim) -> None:
    r = await sim.signed("POST", "/fapi/v1/countdownCancelAll", symbol="BTCUSDT")
    assert r.json()["code"] == -1102
    r = await sim.signed("POST", "/fapi/v1/countdownCancelAll", symbol="NOPE", countdownTime=1000)
    assert r.json()["code"] == -1121


async def test_leverage(sim: Sim) -> None:
    r = await sim.signed("POST", "/fapi/v1/leverage", symbol="BTCUSDT", leverage=10)
    assert r.status_code == 200
    assert r.json() == {"leverage": 10, "maxNotionalValue": "230000000", "symbol": "BTCUSDT"}
    for bad in ("0", "126", "x"):
        r = await sim.signed("POST", "/fapi/v1/leverage", symbol="BTCUSDT", leverage=bad)
        assert r.json() == {"code": -4028, "msg": f"Leverage {bad} is not valid"}
    risk = (await sim.signed("GET", "/fapi/v2/positionRisk", symbol="BTCUSDT")).json()
    assert (risk[0]["leverage"], risk[0]["maxNotionalValue"]) == ("10", "230000000")
    other = (await sim.signed("GET", "/fapi/v2/positionRisk", symbol="ETHUSDT")).json()
    assert other[0]["leverage"] == "20"


async def test_leverage_above_the_position_bracket_is_refused(sim: Sim) -> None:
    await sim.signed("POST", "/fapi/v1/leverage", symbol="BTCUSDT", leverage=1)
    await sim.order(side="BUY", type="MARKET", quantity="1.100")  # 55,000 USDT > 50,000 allowed at 125x
    r = await sim.signed("POST", "/fapi/v1/leverage", symbol="BTCUSDT", leverage=125)
    assert r.json()["code"] == -2027
    assert (await sim.signed("POST", "/fapi/v1/leverage", symbol="BTCUSDT", leverage=100)).status_code == 200


async def test_leverage_change_is_pushed_on_the_user_stream(sim: Sim) -> None:
    _, ws = await sim.user_stream()
    await sim.signed("POST", "/fapi/v1/leverage", symbol="ETHUSDT", leverage=7)
    event = await next_event(ws)
    assert event["e"] == "ACCOUNT_CONFIG_UPDATE" and event["ac"] == {"s": "ETHUSDT", "l": 7}
    await ws.close()


async def test_margin_type(sim: Sim) -> None:
    r = await sim.signed("POST", "/fapi/v1/marginType", symbol="BTCUSDT", marginType="CROSSED")
    assert r.json() == {"code": -4046, "msg": "No need to change margin type."}
    r = await sim.signed("POST", "/fapi/v1/marginType", symbol="BTCUSDT", marginType="ISOLATED")
    assert r.status_code == 200 and r.json() == {"code": 200, "msg": "success"}
    risk = (await sim.signed("GET", "/fapi/v2/positionRisk", symbol="BTCUSDT")).json()[0]
    assert risk["marginType"] == "isolated"
    r = await sim.signed("POST", "/fapi/v1/marginType", symbol="BTCUSDT", marginType="SPLIT")
    assert r.json()["code"] == -1130
    await sim.order(**LIMIT)
    r = await sim.signed("POST", "/fapi/v1/marginType", symbol="BTCUSDT", marginType="CROSSED")
    assert r.json()["code"] == -4047
    await sim.signed("DELETE", "/fapi/v1/allOpenOrders", symbol="BTCUSDT")
    await sim.order(side="BUY", type="MARKET", quantity="0.010")
    r = await sim.signed("POST", "/fapi/v1/marginType", symbol="BTCUSDT", marginType="CROSSED")
    assert r.json() == {"code": -4048, "msg": "Margin type cannot be changed if there exists position."}


async def test_position_mode_switch_and_refusals(sim: Sim) -> None:
    r = await sim.signed("GET", "/fapi/v1/positionSide/dual")
    assert r.json() == {"dualSidePosition": False}
    r = await sim.signed("POST", "/fapi/v1/positionSide/dual", dualSidePosition="false")
    assert r.json() == {"code": -4059, "msg": "No need to change position side."}
    await sim.order(**LIMIT)
    r = await sim.signed("POST", "/fapi/v1/positionSide/dual", dualSidePosition="true")
    assert r.json()["code"] == -4067
    await sim.signed("DELETE", "/fapi/v1/allOpenOrders", symbol="BTCUSDT")
    await sim.order(side="BUY", type="MARKET", quantity="0.010")
    r = await sim.signed("POST", "/fapi/v1/positionSide/dual", dualSidePosition="true")
    assert r.json()["code"] == -4068
    await sim.order(side="SELL", type="MARKET", quantity="0.010", reduceOnly="true")
    r = await sim.signed("POST", "/fapi/v1/positionSide/dual", dualSidePosition="true")
    assert r.json() == {"code": 200, "msg": "success"}
    assert (await sim.signed("GET", "/fapi/v1/positionSide/dual")).json() == {"dualSidePosition": True}


async def test_hedge_mode_orders_and_positions(sim: Sim) -> None:
    await sim.signed("POST", "/fapi/v1/positionSide/dual", dualSidePosition="true")
    r = await sim.order(**LIMIT)
    assert r.json() == {"code": -4061, "msg": "Order's position side does not match user's setting."}
    r = await sim.order(**LIMIT, positionSide="BOTH")
    assert r.json()["code"] == -4061
    r = await sim.order(**LIMIT, positionSide="LONG", reduceOnly="true")
    assert r.json() == {"code": -1106, "msg": "Parameter 'reduceOnly' sent when not required."}
    r = await sim.order(side="SELL", type="MARKET", quantity="0.010", positionSide="LONG")
    assert r.json()["code"] == -2022  # closing a LONG side that holds nothing
    r = await sim.order(**LIMIT, positionSide="LONG", newClientOrderId="h-1")
    assert r.status_code == 200 and r.json()["positionSide"] == "LONG"
    await sim.order(side="BUY", type="MARKET", quantity="0.020", positionSide="LONG")
    await sim.order(side="SELL", type="MARKET", quantity="0.030", positionSide="SHORT")
    await sim.order(side="SELL", type="MARKET", quantity="0.005", positionSide="LONG")
    rows = (await sim.signed("GET", "/fapi/v2/positionRisk", symbol="BTCUSDT")).json()
    assert {r["positionSide"]: r["positionAmt"] for r in rows} == {"LONG": "0.015", "SHORT": "-0.030"}
    account = (await sim.signed("GET", "/fapi/v3/account")).json()
    assert {p["positionSide"] for p in account["positions"] if p["symbol"] == "BTCUSDT"} == {"LONG", "SHORT"}
    trades = await sim.admin_get("trades")
    assert [t["positionSide"] for t in trades] == ["LONG", "SHORT", "LONG"]


async def test_one_way_mode_refuses_a_hedge_side(sim: Sim) -> None:
    r = await sim.order(**LIMIT, positionSide="SHORT")
    assert r.json()["code"] == -4061
    r = await sim.order(**LIMIT, positionSide="BOTH")
    assert r.status_code == 200 and r.json()["positionSide"] == "BOTH"


async def test_leverage_bracket(sim: Sim) -> None:
    one = (await sim.signed("GET", "/fapi/v1/leverageBracket", symbol="BTCUSDT")).json()
    assert one["symbol"] == "BTCUSDT"
    first, second = one["brackets"][:2]
    assert first == {
        "bracket": 1,
        "initialLeverage": 125,
        "notionalCap": 50000,
        "notionalFloor": 0,
        "maintMarginRatio": 0.004,
        "cum": 0.0,
    }
    assert (second["notionalFloor"], second["cum"]) == (50000, 50.0)
    every = (await sim.signed("GET", "/fapi/v1/leverageBracket")).json()
    assert isinstance(every, list) and {"BTCUSDT", "ETHUSDT"} <= {b["symbol"] for b in every}
    r = await sim.signed("GET", "/fapi/v1/leverageBracket", symbol="NOPE")
    assert r.json()["code"] == -1121
