"""User-data stream: listenKey lifecycle, websocket events in order and consistent with REST, pings."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from sim_helpers import Sim, next_event

OTU_FIELDS = {
    "s",
    "c",
    "S",
    "o",
    "f",
    "q",
    "p",
    "ap",
    "sp",
    "x",
    "X",
    "i",
    "l",
    "z",
    "L",
    "N",
    "n",
    "T",
    "t",
    "b",
    "a",
    "m",
    "R",
    "wt",
    "ot",
    "ps",
    "cp",
    "rp",
    "pP",
    "si",
    "ss",
    "V",
    "pm",
    "gtd",
    "er",
}


async def _order_events(ws: Any, count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while len(events) < count:
        ev = await next_event(ws)
        if ev["e"] == "ORDER_TRADE_UPDATE":
            events.append(ev)
    return events


async def test_listen_key_lifecycle(sim: Sim) -> None:
    k1 = (await sim.keyed("POST", "/fapi/v1/listenKey")).json()["listenKey"]
    k2 = (await sim.keyed("POST", "/fapi/v1/listenKey")).json()["listenKey"]
    assert k1 == k2
    r = await sim.keyed("PUT", "/fapi/v1/listenKey")
    assert r.json() == {"listenKey": k1}
    assert (await sim.keyed("DELETE", "/fapi/v1/listenKey")).json() == {}
    r = await sim.keyed("PUT", "/fapi/v1/listenKey")
    assert r.status_code == 400
    assert r.json() == {
        "code": -1125,
        "msg": "This listenKey does not exist. Please use `POST /fapi/v1/listenKey` to recreate `listenKey`",
    }
    r = await sim.http.get(f"/private/ws?listenKey={k1}")
    assert r.status_code == 400 and r.json()["code"] == -1125


@pytest.mark.parametrize("legacy", [False, True])
async def test_order_events_in_order_and_consistent_with_rest(sim: Sim, legacy: bool) -> None:
    _, ws = await sim.user_stream(legacy=legacy)
    await sim.set_price("BTCUSDT", "50000", liquidity="0.004")
    r = await sim.order(
        side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.010", price="49000", newClientOrderId="ev-1"
    )
    oid = r.json()["orderId"]
    new = (await _order_events(ws, 1))[0]
    assert set(new["o"]) == OTU_FIELDS and {"e", "E", "T", "o"} == set(new)
    assert (
        new["o"]["x"] == "NEW" and new["o"]["X"] == "NEW" and new["o"]["i"] == oid and new["o"]["c"] == "ev-1"
    )
    await sim.set_price("BTCUSDT", "48000")
    trade = (await _order_events(ws, 1))[0]["o"]
    assert (trade["x"], trade["X"], trade["l"], trade["z"], trade["L"]) == (
        "TRADE",
        "PARTIALLY_FILLED",
        "0.004",
        "0.004",
        "49000.00",
    )
    assert trade["t"] > 0 and trade["m"] is True and trade["N"] == "USDT"
    acct = await next_event(ws)
    assert acct["e"] == "ACCOUNT_UPDATE" and acct["a"]["m"] == "ORDER"
    assert acct["a"]["P"][0]["s"] == "BTCUSDT" and acct["a"]["P"][0]["pa"] == "0.004"
    c = await sim.signed("DELETE", "/fapi/v1/order", symbol="BTCUSDT", orderId=oid)
    canceled = (await _order_events(ws, 1))[0]["o"]
    assert canceled["x"] == "CANCELED" and canceled["X"] == c.json()["status"] == "CANCELED"
    assert canceled["z"] == c.json()["executedQty"] == "0.004"
    q = await sim.signed("GET", "/fapi/v1/order", symbol="BTCUSDT", orderId=oid)
    assert q.json()["status"] == "CANCELED"
    await ws.close()


async def test_market_order_events_before_or_with_rest_reply(sim: Sim) -> None:
    _, ws = await sim.user_stream()
    r = await sim.order(side="SELL", type="MARKET", quantity="0.010", newOrderRespType="RESULT")
    events = await _order_events(ws, 2)
    assert [e["o"]["x"] for e in events] == ["NEW", "TRADE"]
    assert events[1]["o"]["X"] == r.json()["status"] == "FILLED"
    assert events[1]["o"]["m"] is False and events[1]["E"] >= events[0]["E"]
    await ws.close()


async def test_ioc_expiry_event_has_reason(sim: Sim) -> None:
    _, ws = await sim.user_stream()
    await sim.set_price("BTCUSDT", "50000", liquidity="0.002")
    await sim.order(side="BUY", type="LIMIT", timeInForce="IOC", quantity="0.010", price="50100")
    events = await _order_events(ws, 3)
    assert [(e["o"]["x"], e["o"]["X"]) for e in events] == [
        ("NEW", "NEW"),
        ("TRADE", "PARTIALLY_FILLED"),
        ("EXPIRED", "EXPIRED"),
    ]
    assert events[2]["o"]["er"] == "2"
    await ws.close()


async def test_gtx_reject_emits_nothing(sim: Sim) -> None:
    _, ws = await sim.user_stream()
    r = await sim.order(side="BUY", type="LIMIT", timeInForce="GTX", quantity="0.010", price="50100")
    assert r.json()["code"] == -5022
    await sim.order(
        side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.010", price="49000", newClientOrderId="after"
    )
    ev = (await _order_events(ws, 1))[0]
    assert ev["o"]["c"] == "after"
    await ws.close()


async def test_accounts_only_see_their_own_events(sim: Sim) -> None:
    _, ws_b = await sim.user_stream(sim.accounts[1])
    await sim.order(side="BUY", type="MARKET", quantity="0.010")
    await sim.order(
        account=sim.accounts[1],
        side="BUY",
        type="LIMIT",
        timeInForce="GTC",
        quantity="0.010",
        price="49000",
        newClientOrderId="mine-b",
    )
    ev = (await _order_events(ws_b, 1))[0]
    assert ev["o"]["c"] == "mine-b"
    await ws_b.close()


async def test_listen_key_expires_without_keepalive(make_sim: Any) -> None:
    sim = await make_sim(time_scale=3600.0 / 0.6)  # 60 exchange minutes pass in 0.6 s
    key, ws = await sim.user_stream()
    ev = await next_event(ws, timeout=5)
    assert ev == {"e": "listenKeyExpired", "E": ev["E"], "listenKey": key}
    r = await sim.keyed("PUT", "/fapi/v1/listenKey")
    assert r.json()["code"] == -1125
    await ws.close()


async def test_keepalive_extends(make_sim: Any) -> None:
    import asyncio

    # A listenKey lives 60 exchange minutes: 2 wall seconds here. Four keepalives 0.7 s apart keep
    # it past that; each interval leaves 1.3 s of margin for a loaded machine.
    sim = await make_sim(time_scale=3600.0 / 2.0)
    key, ws = await sim.user_stream()
    for _ in range(4):
        await asyncio.sleep(0.7)
        assert (await sim.keyed("PUT", "/fapi/v1/listenKey")).json() == {"listenKey": key}
    await sim.order(side="BUY", type="MARKET", quantity="0.010")
    assert (await next_event(ws))["e"] == "ORDER_TRADE_UPDATE"
    await ws.close()


async def test_server_pings(make_sim: Any) -> None:
    sim = await make_sim(ws_ping_interval_s=0.1)
    key = (await sim.keyed("POST", "/fapi/v1/listenKey")).json()["listenKey"]
    ws = await sim.session.ws_connect(f"{sim.ws_base}/private/ws?listenKey={key}", autoping=False)
    msg = await ws.receive(timeout=3)
    assert msg.type == aiohttp.WSMsgType.PING
    await ws.pong(msg.data)
    await ws.close()


async def test_events_filter_on_private_url(sim: Sim) -> None:
    key = (await sim.keyed("POST", "/fapi/v1/listenKey")).json()["listenKey"]
    ws = await sim.session.ws_connect(f"{sim.ws_base}/private/ws?listenKey={key}&events=ACCOUNT_UPDATE")
    await sim.order(side="BUY", type="MARKET", quantity="0.010")
    assert (await next_event(ws))["e"] == "ACCOUNT_UPDATE"
    await ws.close()
