"""ccxt and binance-futures-connector read market data from the simulator (only the base URL changed)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import ccxt.async_support as ccxt_async
from binance.um_futures import UMFutures

from sim_helpers import Sim, ccxt_client


async def test_ccxt_market_data(sim: Sim) -> None:
    for price in ("50100", "49950.5"):
        await sim.set_price("BTCUSDT", price)
    ex = ccxt_client(sim, ccxt_async, signed=False)
    try:
        await ex.load_markets()
        sym = "BTC/USDT:USDT"
        ticker = await ex.fetch_ticker(sym)
        assert ticker["last"] == 49950.5 and ticker["high"] >= 50100 and ticker["baseVolume"] > 0
        tickers = await ex.fetch_tickers()
        assert len(tickers) == 20 and tickers[sym]["last"] == 49950.5
        book = await ex.fetch_order_book(sym, 20)
        assert len(book["bids"]) == len(book["asks"]) == 20
        assert book["bids"][0][0] <= 49950.5 <= book["asks"][0][0] and book["nonce"] > 0
        trades = await ex.fetch_trades(sym)
        assert trades and {t["price"] for t in trades} == {50100.0, 49950.5}
        assert trades[-1]["side"] == "sell"  # the price fell
        ohlcv = await ex.fetch_ohlcv(sym, "1m", limit=30)
        assert len(ohlcv) == 30 and ohlcv[-1][4] == 49950.5
        assert all(prev[4] == nxt[1] for prev, nxt in itertools.pairwise(ohlcv))
        since = ohlcv[5][0]
        assert [c[0] for c in await ex.fetch_ohlcv(sym, "1m", since=since, limit=3)] == [
            c[0] for c in ohlcv[5:8]
        ]
        funding = await ex.fetch_funding_rate(sym)
        assert funding["fundingRate"] == 0.0001 and funding["markPrice"] == 49950.5
        assert funding["fundingTimestamp"] % (8 * 3_600_000) == 0
        history = await ex.fetch_funding_rate_history(sym, limit=3)
        assert len(history) == 3 and history[-1]["fundingRate"] == 0.0001
        mark = await ex.fetch_mark_price(sym)
        assert mark["markPrice"] == 49950.5
        oi = await ex.fetch_open_interest(sym)
        assert oi["openInterestAmount"] > 0
    finally:
        await ex.close()


def _connector_market(sim: Sim) -> dict[str, Any]:
    client = UMFutures(base_url=sim.base_url)
    return {
        "ticker": client.ticker_24hr_price_change(symbol="BTCUSDT"),
        "depth": client.depth(symbol="BTCUSDT", limit=10),
        "klines": client.klines(symbol="BTCUSDT", interval="5m", limit=12),
        "trades": client.trades(symbol="BTCUSDT", limit=10),
        "book_ticker": client.book_ticker(symbol="BTCUSDT"),
        "mark_klines": client.mark_price_klines(symbol="BTCUSDT", interval="1h", limit=3),
    }


async def test_binance_futures_connector_market_data(sim: Sim) -> None:
    await sim.set_price("BTCUSDT", "50200")
    out = await asyncio.to_thread(_connector_market, sim)
    assert out["ticker"]["symbol"] == "BTCUSDT" and out["ticker"]["lastPrice"] == "50200.00"
    assert len(out["depth"]["bids"]) == 10 and "lastUpdateId" in out["depth"]
    assert len(out["klines"]) == 12 and out["klines"][-1][4] == "50200.00"
    assert out["trades"] and out["trades"][-1]["price"] == "50200.00"
    assert out["book_ticker"]["bidPrice"] == out["depth"]["bids"][0][0]
    assert len(out["mark_klines"]) == 3
