"""Market websocket streams: event shapes, a depth snapshot + diff stream a client can follow, combined
streams, and /ws/<listenKey> still serving the user stream."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from sim_helpers import Sim, next_event


async def _until(ws: Any, pred: Any, timeout: float = 5.0) -> dict[str, Any]:
    async def loop() -> dict[str, Any]:
        while True:
            ev = await next_event(ws, timeout)
            if pred(ev):
                return ev

    return await asyncio.wait_for(loop(), timeout)


def _apply_diff(book: dict[str, dict[str, str]], event: dict[str, Any]) -> None:
    """Apply a depth diff event to a local book (size 0 removes the level), as Binance documents."""
    for side in ("b", "a"):
        for price, qty in event[side]:
            if Decimal(qty) == 0:
                book[side].pop(price, None)
            else:
                book[side][price] = qty


async def test_depth_snapshot_and_diffs_can_be_followed(sim: Sim) -> None:
    ws = await sim.session.ws_connect(f"{sim.ws_base}/ws/btcusdt@depth@100ms")
    buffered = [await next_event(ws)]
    snap = (await sim.http.get("/fapi/v1/depth", params={"symbol": "BTCUSDT", "limit": 1000})).json()
    book = {"b": {p: q for p, q in snap["bids"]}, "a": {p: q for p, q in snap["asks"]}}
    await sim.set_price("BTCUSDT", "50050")
    prev_u: int | None = None
    applied = 0
    while applied < 6:
        ev = buffered.pop(0) if buffered else await next_event(ws)
        assert ev["e"] == "depthUpdate" and ev["s"] == "BTCUSDT"
        assert {"E", "T", "U", "u", "pu", "b", "a"} <= set(ev)
        if ev["u"] < snap["lastUpdateId"]:
            continue
        if prev_u is None:
            assert ev["U"] <= snap["lastUpdateId"] <= ev["u"] or ev["pu"] == snap["lastUpdateId"]
        else:
            assert ev["pu"] == prev_u
        prev_u = ev["u"]
        _apply_diff(book, ev)
        applied += 1
    compared = 0
    for _ in range(10):  # a snapshot whose id ends a diff event must equal the book built from the diffs
        await asyncio.sleep(0.12)
        now = (await sim.http.get("/fapi/v1/depth", params={"symbol": "BTCUSDT", "limit": 1000})).json()
        while prev_u < now["lastUpdateId"]:
            ev = await next_event(ws)
            assert ev["pu"] == prev_u
            prev_u = ev["u"]
            _apply_diff(book, ev)
        if prev_u == now["lastUpdateId"]:
            bids = sorted(book["b"].items(), key=lambda x: Decimal(x[0]), reverse=True)
            asks = sorted(book["a"].items(), key=lambda x: Decimal(x[0]))
            assert [list(x) for x in bids] == now["bids"] and [list(x) for x in asks] == now["asks"]
            compared += 1
    assert compared >= 3
    assert Decimal(now["bids"][0][0]) <= Decimal(50050) <= Decimal(now["asks"][0][0])
    await ws.close()


async def test_combined_streams(sim: Sim) -> None:
    names = [
        "btcusdt@aggTrade",
        "btcusdt@bookTicker",
        "btcusdt@depth5",
        "btcusdt@kline_1m",
        "btcusdt@markPrice@1s",
    ]
    ws = await sim.session.ws_connect(f"{sim.ws_base}/stream?streams={'/'.join(names)}")
    await asyncio.sleep(0.3)
    await sim.set_price("BTCUSDT", "50070")
    seen: dict[str, dict[str, Any]] = {}
    while len(seen) < len(names):
        msg = await next_event(ws)
        assert set(msg) == {"stream", "data"} and msg["stream"] in names
        seen.setdefault(msg["stream"], msg["data"])
    agg = seen["btcusdt@aggTrade"]
    assert (
        agg["e"] == "aggTrade" and agg["p"] == "50070.00" and {"a", "q", "f", "l", "T", "m", "E"} <= set(agg)
    )
    bt = seen["btcusdt@bookTicker"]
    assert bt["e"] == "bookTicker" and {"u", "b", "B", "a", "A", "T", "E", "s"} <= set(bt)
    d5 = seen["btcusdt@depth5"]
    assert d5["e"] == "depthUpdate" and len(d5["b"]) == len(d5["a"]) == 5
    k = seen["btcusdt@kline_1m"]
    assert k["e"] == "kline" and k["k"]["i"] == "1m" and k["k"]["x"] is False
    assert {"t", "T", "o", "c", "h", "l", "v", "n", "q", "V", "Q", "f", "L"} <= set(k["k"])
    mp = seen["btcusdt@markPrice@1s"]
    assert mp["e"] == "markPriceUpdate" and {"p", "i", "P", "r", "T"} <= set(mp)
    await ws.close()


async def test_raw_stream_and_user_stream_share_ws_path(sim: Sim) -> None:
    ws = await sim.session.ws_connect(f"{sim.ws_base}/ws/ethusdt@aggTrade")
    await asyncio.sleep(0.05)
    await sim.set_price("ETHUSDT", "3001")
    ev = await _until(ws, lambda e: e.get("e") == "aggTrade")
    assert ev["s"] == "ETHUSDT" and ev["p"] == "3001.00"
    await ws.close()
    _, user = await sim.user_stream(legacy=True)
    r = await sim.order(side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.010", price="49000")
    assert r.status_code == 200
    ev = await next_event(user)
    assert ev["e"] == "ORDER_TRADE_UPDATE"
    await user.close()


async def test_unknown_stream_is_refused(sim: Sim) -> None:
    r = await sim.http.get("/ws/nosuch@depth")
    assert r.status_code == 400 and r.json()["code"] == -1121
    r = await sim.http.get("/stream", params={"streams": "btcusdt@nonsense"})
    assert r.status_code == 400
