"""ccxt's binanceusdm account calls (balance, positions, my trades, orders, funding history) against the
simulator, unchanged apart from the base URL, after a funding time has passed on the simulated clock."""

from __future__ import annotations

import ccxt.async_support as ccxt_async

from sim_helpers import Sim, ccxt_client

SYMBOL = "BTC/USDT:USDT"


async def test_ccxt_account_calls(sim: Sim) -> None:
    ex = ccxt_client(sim, ccxt_async)
    try:
        await ex.load_markets()
        await ex.create_order(SYMBOL, "market", "buy", 0.01)
        resting = await ex.create_order(SYMBOL, "limit", "buy", 0.01, 49000)
        clock = (await sim.http.get("/admin/clock")).json()
        r = await sim.http.post(
            "/admin/clock", json={"advance_ms": clock["nextFundingTime"] - clock["serverTime"] + 1000}
        )
        assert r.status_code == 200

        balance = await ex.fetch_balance()
        # 100000 - 0.25 taker fee - 0.05 funding (0.01 BTC x 50000 x 0.0001)
        assert balance["USDT"]["total"] == 99999.7

        positions = await ex.fetch_positions([SYMBOL])
        assert [(p["symbol"], p["side"], p["contracts"]) for p in positions] == [(SYMBOL, "long", 0.01)]
        assert positions[0]["entryPrice"] == 50000

        trades = await ex.fetch_my_trades(SYMBOL)
        assert [(t["side"], t["amount"], t["price"], t["fee"]["cost"]) for t in trades] == [
            ("buy", 0.01, 50000, 0.25)
        ]

        orders = await ex.fetch_orders(SYMBOL)
        assert [o["status"] for o in orders] == ["closed", "open"]
        assert orders[1]["id"] == resting["id"]

        funding = await ex.fetch_funding_history(SYMBOL)
        assert [(f["symbol"], f["amount"], f["code"]) for f in funding] == [(SYMBOL, -0.05, "USDT")]
        assert funding[0]["timestamp"] == clock["nextFundingTime"]
    finally:
        await ex.close()
