"""Real Binance client libraries (ccxt, binance-futures-connector) trade against the simulator unchanged
apart from the base URL."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import pytest
from binance.error import ClientError
from binance.um_futures import UMFutures

from sim_helpers import Sim, ccxt_client


async def test_ccxt_binanceusdm_round_trip(sim: Sim) -> None:
    ex = ccxt_client(sim, ccxt_async)
    try:
        markets = await ex.load_markets()
        btc = markets["BTC/USDT:USDT"]
        assert btc["id"] == "BTCUSDT" and btc["limits"]["cost"]["min"] == 100
        order = await ex.create_order(
            "BTC/USDT:USDT", "limit", "buy", 0.01, 49000, {"clientOrderId": "ccxt-1"}
        )
        assert order["status"] == "open" and order["clientOrderId"] == "ccxt-1"
        fetched = await ex.fetch_order(order["id"], "BTC/USDT:USDT")
        assert fetched["status"] == "open" and fetched["price"] == 49000 and fetched["amount"] == 0.01
        opened = await ex.fetch_open_orders("BTC/USDT:USDT")
        assert [o["id"] for o in opened] == [order["id"]]
        canceled = await ex.cancel_order(order["id"], "BTC/USDT:USDT")
        assert canceled["status"] == "canceled"
        assert await ex.fetch_open_orders("BTC/USDT:USDT") == []
        market = await ex.create_order("BTC/USDT:USDT", "market", "sell", 0.01)
        assert (await ex.fetch_order(market["id"], "BTC/USDT:USDT"))["status"] == "closed"
        with pytest.raises(ccxt.OrderNotFound):
            await ex.cancel_order(order["id"], "BTC/USDT:USDT")
        with pytest.raises(ccxt.InvalidOrder) as exc:
            await ex.create_order("BTC/USDT:USDT", "limit", "buy", 0.01, 50100, {"postOnly": True})
        assert "-5022" in str(exc.value)
    finally:
        await ex.close()
    # The rejection reached the exchange as a GTX order and left no order behind.
    rows = await sim.admin_get("requests", path="/fapi/v1/order", method="POST")
    assert rows[-1]["params"]["timeInForce"] == "GTX" and rows[-1]["errorCode"] == -5022
    assert all(o["timeInForce"] != "GTX" for o in await sim.admin_get("orders"))


async def test_ccxt_maps_the_simulators_5022_reply_to_order_not_fillable(sim: Sim) -> None:
    """ccxt picks its USD-M error map by URL (fapi.binance.com); fed the simulator's actual -5022 reply under
    that URL, it raises OrderNotFillable, its post-only "would take liquidity" error."""
    r = await sim.order(side="BUY", type="LIMIT", timeInForce="GTX", quantity="0.010", price="50100")
    ex = ccxt.binanceusdm()
    with pytest.raises(ccxt.OrderNotFillable):
        ex.handle_errors(
            r.status_code,
            "Bad Request",
            "https://fapi.binance.com/fapi/v1/order",
            "POST",
            dict(r.headers),
            r.text,
            json.loads(r.text),
            None,
            None,
        )


def _connector_session(sim: Sim) -> dict[str, Any]:
    client = UMFutures(key=sim.account.key, secret=sim.account.secret, base_url=sim.base_url)
    out: dict[str, Any] = {}
    out["time"] = client.time()
    out["info"] = client.exchange_info()
    created = client.new_order(
        symbol="BTCUSDT",
        side="BUY",
        type="LIMIT",
        quantity="0.010",
        price="49000",
        timeInForce="GTC",
        newClientOrderId="conn-1",
    )
    out["created"] = created
    out["queried"] = client.query_order(symbol="BTCUSDT", orderId=created["orderId"])
    out["open"] = client.get_orders(symbol="BTCUSDT")
    out["canceled"] = client.cancel_order(symbol="BTCUSDT", origClientOrderId="conn-1")
    try:
        client.new_order(
            symbol="BTCUSDT", side="BUY", type="LIMIT", quantity="0.010", price="50100", timeInForce="GTX"
        )
    except ClientError as exc:
        out["post_only"] = exc
    try:
        client.query_order(symbol="BTCUSDT", orderId=1)
    except ClientError as exc:
        out["missing"] = exc
    out["positions"] = client.get_position_risk(symbol="BTCUSDT")
    out["listen_key"] = client.new_listen_key()
    return out


async def test_binance_futures_connector_round_trip(sim: Sim) -> None:
    out = await asyncio.to_thread(_connector_session, sim)
    assert "serverTime" in out["time"] and out["info"]["symbols"]
    assert out["created"]["status"] == "NEW" and out["created"]["clientOrderId"] == "conn-1"
    assert out["queried"]["orderId"] == out["created"]["orderId"]
    assert [o["clientOrderId"] for o in out["open"]] == ["conn-1"]
    assert out["canceled"]["status"] == "CANCELED"
    post_only: ClientError = out["post_only"]
    assert post_only.status_code == 400 and post_only.error_code == -5022
    assert out["missing"].error_code == -2013 and out["missing"].error_message == "Order does not exist."
    assert out["positions"] == []  # v3 positionRisk lists only symbols with a position or open orders
    assert len(out["listen_key"]["listenKey"]) == 64
