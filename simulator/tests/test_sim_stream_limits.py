"""Binance's per-connection limits on the market websocket: a stream cap (1024; lowered here, as the
simulator serves fewer distinct stream names than that) and 10 incoming messages per second."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from sim_helpers import new_account, next_event
from usdm_simulator.config import SimulatorConfig


async def _reply(ws: Any, request: dict[str, Any]) -> dict[str, Any]:
    await ws.send_json(request)
    while True:
        msg = await next_event(ws)
        if msg.get("id") == request["id"]:
            return msg


async def _closed_with(ws: Any) -> tuple[int | None, int]:
    """Read until the server closes; return the close code and how many replies came first."""
    replies = 0
    while True:
        msg = await ws.receive(timeout=3)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            return ws.close_code, replies
        replies += 1


def test_defaults_are_binances_limits() -> None:
    config = SimulatorConfig(accounts=[new_account()])
    assert (config.market_ws_max_streams, config.market_ws_max_messages_per_s) == (1024, 10)


async def test_subscribe_past_the_stream_cap_is_refused(make_sim: Any) -> None:
    sim = await make_sim(market_ws_max_streams=4)
    ws = await sim.session.ws_connect(f"{sim.ws_base}/ws/btcusdt@aggTrade/btcusdt@trade")
    ok = {"method": "SUBSCRIBE", "params": ["ethusdt@aggTrade", "ethusdt@trade", "btcusdt@trade"], "id": 1}
    assert await _reply(ws, ok) == {"result": None, "id": 1}  # 4 streams: at the cap
    fifth = {"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade", "solusdt@trade"], "id": 2}
    assert await _reply(ws, fifth) == {
        "error": {
            "code": 2,
            "msg": "Invalid request: too many streams: a connection can listen to at most 4",
        },
        "id": 2,
    }
    listed = await _reply(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 3})
    assert listed["result"] == ["btcusdt@aggTrade", "btcusdt@trade", "ethusdt@aggTrade", "ethusdt@trade"]
    await _reply(ws, {"method": "UNSUBSCRIBE", "params": ["ethusdt@trade"], "id": 4})
    assert await _reply(ws, {"method": "SUBSCRIBE", "params": ["solusdt@trade"], "id": 5}) == {
        "result": None,
        "id": 5,
    }
    await ws.close()


async def test_url_naming_more_streams_than_the_cap_is_refused(make_sim: Any) -> None:
    sim = await make_sim(market_ws_max_streams=2)
    r = await sim.http.get("/stream", params={"streams": "btcusdt@trade/ethusdt@trade/solusdt@trade"})
    assert r.status_code == 400 and r.json()["code"] == -1130
    r = await sim.http.get("/market/ws/btcusdt@trade/ethusdt@trade/solusdt@trade")
    assert r.status_code == 400
    ws = await sim.session.ws_connect(
        f"{sim.ws_base}/stream?streams=btcusdt@trade/ethusdt@trade/btcusdt@trade"
    )
    await ws.close()  # two distinct streams: allowed


async def test_eleven_messages_in_a_second_close_the_connection(make_sim: Any) -> None:
    sim = await make_sim()
    ws = await sim.session.ws_connect(f"{sim.ws_base}/ws")
    for i in range(10):
        await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": i})
    assert [(await next_event(ws))["id"] for _ in range(10)] == list(range(10))
    await asyncio.sleep(1.1)  # the window slides: ten more are fine
    for i in range(10, 21):  # ... but not eleven
        await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": i})
    code, replies = await _closed_with(ws)
    assert code == aiohttp.WSCloseCode.POLICY_VIOLATION and replies <= 10


async def test_pings_count_as_messages(make_sim: Any) -> None:
    sim = await make_sim()
    ws = await sim.session.ws_connect(f"{sim.ws_base}/market/ws/btcusdt@aggTrade")
    for _ in range(11):
        await ws.ping()
    code, _ = await _closed_with(ws)
    assert code == aiohttp.WSCloseCode.POLICY_VIOLATION


async def test_no_message_rate_in_load_test_mode(make_sim: Any) -> None:
    sim = await make_sim(rate_limits={"enabled": False}, market_ws_max_streams=1)
    ws = await sim.session.ws_connect(f"{sim.ws_base}/ws")
    for i in range(40):
        await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": i})
    assert [(await next_event(ws))["id"] for _ in range(40)] == list(range(40))
    two = {"method": "SUBSCRIBE", "params": ["btcusdt@trade", "ethusdt@trade"], "id": 99}
    assert (await _reply(ws, two))["error"]["code"] == 2  # the stream cap still holds
    await ws.close()
