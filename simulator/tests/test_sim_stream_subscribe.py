"""Live subscription on the market websocket (SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS / properties),
and ccxt.pro's binanceusdm watching book, trades, OHLCV and bids/asks with only its URLs changed."""

from __future__ import annotations

import asyncio
from typing import Any

import ccxt.pro as ccxt_pro

from sim_helpers import Sim, ccxt_client, next_event


async def _reply(ws: Any, request_id: int | None) -> dict[str, Any]:
    """The next control reply (a frame with ``id``) for ``request_id``, skipping stream events."""
    while True:
        msg = await next_event(ws)
        if "id" in msg and msg["id"] == request_id:
            return msg


async def test_subscribe_unsubscribe_list_on_bare_connection(sim: Sim) -> None:
    ws = await sim.session.ws_connect(f"{sim.ws_base}/ws")
    await ws.send_json({"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade", "btcusdt@depth"], "id": 1})
    assert await _reply(ws, 1) == {"result": None, "id": 1}
    await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 2})
    assert await _reply(ws, 2) == {"result": ["btcusdt@aggTrade", "btcusdt@depth"], "id": 2}
    await sim.set_price("BTCUSDT", "50010")
    kinds: set[str] = set()
    while kinds != {"aggTrade", "depthUpdate"}:
        kinds.add((await next_event(ws))["e"])
    await ws.send_json({"method": "UNSUBSCRIBE", "params": ["btcusdt@depth", "btcusdt@aggTrade"], "id": 3})
    assert await _reply(ws, 3) == {"result": None, "id": 3}
    await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 4})
    assert await _reply(ws, 4) == {"result": [], "id": 4}
    await sim.set_price("BTCUSDT", "50020")
    await asyncio.sleep(0.4)
    await ws.send_json({"method": "GET_PROPERTY", "params": ["combined"], "id": 5})
    assert await next_event(ws) == {"result": False, "id": 5}  # nothing queued after the unsubscribe
    await ws.close()


async def test_combined_property_and_path_streams_are_listed(sim: Sim) -> None:
    ws = await sim.session.ws_connect(f"{sim.ws_base}/market/ws/ethusdt@aggTrade")
    await ws.send_json({"method": "SET_PROPERTY", "params": ["combined", True], "id": 7})
    assert await _reply(ws, 7) == {"result": None, "id": 7}
    await ws.send_json({"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 8})
    assert await _reply(ws, 8) == {"result": None, "id": 8}
    await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 9})
    assert (await _reply(ws, 9))["result"] == ["ethusdt@aggTrade", "btcusdt@trade"]
    await sim.set_price("BTCUSDT", "50030")
    msg = await next_event(ws)
    assert msg["stream"] == "btcusdt@trade" and msg["data"]["e"] == "trade"
    assert msg["data"]["p"] == "50030.00" and {"t", "q", "T", "m", "X", "E", "s"} <= set(msg["data"])
    await ws.close()
    ws = await sim.session.ws_connect(f"{sim.ws_base}/stream")
    await ws.send_json({"method": "GET_PROPERTY", "params": ["combined"], "id": 1})
    assert await next_event(ws) == {"result": True, "id": 1}
    await ws.close()


async def test_bad_requests_get_binance_errors(sim: Sim) -> None:
    ws = await sim.session.ws_connect(f"{sim.ws_base}/public/ws")
    cases: list[tuple[Any, int, str]] = [
        ({"method": "FOO", "params": [], "id": 1}, 2, "Invalid request: unknown variant `FOO`"),
        (
            {"method": "SUBSCRIBE", "params": ["btcusdt@nonsense"], "id": 2},
            2,
            "Invalid request: invalid stream",
        ),
        ({"method": "SUBSCRIBE", "params": ["nosuch@depth"], "id": 3}, 2, "Invalid request: invalid stream"),
        ({"method": "SUBSCRIBE", "params": ["btcusdt@depth"]}, 2, "Invalid request: request ID must be"),
        ({"method": "SET_PROPERTY", "params": ["color", True], "id": 4}, 0, "Unknown property"),
        ({"method": "SET_PROPERTY", "params": ["combined", "yes"], "id": 5}, 1, "Invalid value type"),
        ({"params": [], "id": 6}, 2, "Invalid request: missing field `method`"),
    ]
    for request, code, msg in cases:
        await ws.send_json(request)
        reply = await next_event(ws)
        assert reply["error"]["code"] == code and reply["error"]["msg"].startswith(msg), reply
        assert reply["id"] == request.get("id")
    await ws.send_str("{not json")
    reply = await next_event(ws)
    assert reply["error"]["code"] == 3 and reply["error"]["msg"].startswith("Invalid JSON")
    await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 9})
    assert await next_event(ws) == {"result": [], "id": 9}  # a refused SUBSCRIBE subscribes nothing
    await ws.close()


async def test_ccxt_pro_watches_book_trades_ohlcv_and_quotes(sim: Sim) -> None:
    ex = ccxt_client(sim, ccxt_pro, signed=False)
    sym = "BTC/USDT:USDT"
    try:
        await ex.load_markets()
        book = await asyncio.wait_for(ex.watch_order_book(sym), 10)
        assert book["bids"] and book["asks"] and book["bids"][0][0] < book["asks"][0][0]
        ohlcv_task = asyncio.ensure_future(ex.watch_ohlcv(sym, "1m"))
        for price in (50500, 51000, 51500):  # ccxt resolves a watch with what arrived while it waited
            trades_task = asyncio.ensure_future(ex.watch_trades(sym))
            await asyncio.sleep(0.5 if price == 50500 else 0.05)  # the first call subscribes
            await sim.set_price("BTCUSDT", str(price))
            trades = await asyncio.wait_for(trades_task, 10)
            assert trades[-1]["price"] == price and trades[-1]["symbol"] == sym
        candles = await asyncio.wait_for(ohlcv_task, 10)
        assert candles and len(candles[-1]) == 6
        for _ in range(20):  # the locally maintained book follows the price up
            book = await asyncio.wait_for(ex.watch_order_book(sym), 10)
            if book["bids"][0][0] <= 51500 <= book["asks"][0][0]:
                break
        assert book["bids"][0][0] <= 51500 <= book["asks"][0][0]
        ohlcv_task = asyncio.ensure_future(ex.watch_ohlcv(sym, "1m"))  # a kline frame comes on change
        await asyncio.sleep(0.05)
        await sim.set_price("BTCUSDT", "51600")
        ohlcv = await asyncio.wait_for(ohlcv_task, 10)
        for _ in range(20):  # a frame sent just before the change may resolve the first watch
            if ohlcv[-1][4] == 51600:
                break
            ohlcv = await asyncio.wait_for(ex.watch_ohlcv(sym, "1m"), 10)
        assert ohlcv[-1][4] == ohlcv[-1][2] == 51600  # close and high of the current minute
        quotes = await asyncio.wait_for(ex.watch_bids_asks([sym]), 10)
        assert quotes[sym]["bid"] < quotes[sym]["ask"]
        ticker = await asyncio.wait_for(ex.watch_ticker(sym), 10)  # @ticker, every 2 s
        assert ticker["symbol"] == sym and ticker["last"] == 51600
        assert ticker["high"] >= 51600 and ticker["open"] and ticker["baseVolume"] is not None
    finally:
        await ex.close()
