"""Watching our own orders over the user-data stream with third-party clients, only their URLs changed:
ccxt.pro's ``watch_orders`` and binance-futures-connector's ``UMFuturesWebsocketClient.user_data``."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import ccxt.pro as ccxt_pro
from binance.um_futures import UMFutures
from binance.websocket.um_futures.websocket_client import UMFuturesWebsocketClient

from sim_helpers import Sim, ccxt_client

SYMBOL = "BTC/USDT:USDT"


async def test_ccxt_pro_watch_orders_sees_new_partial_and_filled(book_sim: Sim) -> None:
    ex = ccxt_client(book_sim, ccxt_pro)
    try:
        await ex.load_markets()
        watching = asyncio.ensure_future(ex.watch_orders(SYMBOL))
        await asyncio.sleep(0.5)  # listenKey created and the stream open before the order
        placed = await ex.create_order(SYMBOL, "limit", "buy", 0.5, 49999.0)
        seen: list[tuple[str, float]] = []
        while not seen or seen[-1][0] != "closed":
            orders = await asyncio.wait_for(watching, 10)
            seen.extend((o["status"], o["filled"]) for o in orders if o["id"] == placed["id"])
            if seen and seen[-1][0] == "open" and seen[-1][1] == 0:
                await book_sim.set_price("BTCUSDT", "49990")  # through its price: filled
            watching = asyncio.ensure_future(ex.watch_orders(SYMBOL))
        watching.cancel()
        assert seen[0] == ("open", 0) and seen[-1] == ("closed", 0.5)
    finally:
        await ex.close()


async def test_binance_futures_connector_user_data_stream(book_sim: Sim) -> None:
    rest = UMFutures(key=book_sim.account.key, secret=book_sim.account.secret, base_url=book_sim.base_url)
    listen_key = (await asyncio.to_thread(rest.new_listen_key))["listenKey"]
    received: list[dict[str, Any]] = []
    filled = threading.Event()

    def on_message(_: Any, message: str) -> None:
        event = json.loads(message)
        received.append(event)
        if event.get("e") == "ORDER_TRADE_UPDATE" and event["o"]["X"] == "FILLED":
            filled.set()

    client = await asyncio.to_thread(
        UMFuturesWebsocketClient, stream_url=book_sim.ws_base, on_message=on_message
    )
    try:
        await asyncio.to_thread(client.user_data, listen_key=listen_key, id=1)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(rest.new_order, symbol="BTCUSDT", side="SELL", type="MARKET", quantity=0.01)
        assert await asyncio.to_thread(filled.wait, 10)
    finally:
        await asyncio.to_thread(client.stop)
        client.socket_manager.ws.shutdown()  # the library's stop() sends a close frame but keeps the socket
        rest.session.close()
    updates = [e["o"] for e in received if e.get("e") == "ORDER_TRADE_UPDATE"]
    assert updates[0]["x"] == "NEW" and updates[-1]["X"] == "FILLED"
    assert {e.get("e") for e in received} >= {"ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE"}
