"""The simulated clock (admin jumps, time scale) and what hangs off it: funding, /income, listenKey expiry,
the 24 h connection cap; plus TRADE_LITE and the v3 account shape."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import aiohttp

from sim_helpers import Sim, next_event

HOUR_MS = 3600 * 1000


async def _advance(sim: Sim, ms: int) -> dict[str, Any]:
    r = await sim.http.post("/admin/clock", json={"advance_ms": ms})
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


async def _to_next_funding(sim: Sim) -> dict[str, Any]:
    clock = (await sim.http.get("/admin/clock")).json()
    return await _advance(sim, clock["nextFundingTime"] - clock["serverTime"] + 1000)


async def _wallet(sim: Sim, account: Any = None) -> Decimal:
    rows = (await sim.signed("GET", "/fapi/v2/balance", account=account)).json()
    return Decimal(rows[0]["balance"])


async def test_advance_moves_server_time_and_refuses_going_back(sim: Sim) -> None:
    before = (await sim.http.get("/fapi/v1/time")).json()["serverTime"]
    doc = await _advance(sim, 5 * HOUR_MS)
    after = (await sim.http.get("/fapi/v1/time")).json()["serverTime"]
    assert 5 * HOUR_MS <= after - before < 5 * HOUR_MS + 2000
    assert doc["advancedMs"] == 5 * HOUR_MS and doc["timeScale"] == 1.0
    # A client signing with its own (wall) clock still gets through while the exchange runs ahead.
    assert (await sim.signed("GET", "/fapi/v2/account")).status_code == 200
    r = await sim.http.post("/admin/clock", json={"advance_ms": -1})
    assert r.status_code == 400


async def test_time_scale_runs_server_time_faster(make_sim: Any) -> None:
    sim = await make_sim(time_scale=1000.0)
    before = (await sim.http.get("/fapi/v1/time")).json()["serverTime"]
    await asyncio.sleep(0.2)
    after = (await sim.http.get("/fapi/v1/time")).json()["serverTime"]
    assert after - before >= 190_000  # 0.2 wall seconds = 200 exchange seconds


async def test_funding_fee_charged_to_longs_paid_to_shorts(sim: Sim) -> None:
    short_acct = sim.accounts[1]
    r = await sim.http.post("/admin/funding", json={"symbol": "BTCUSDT", "rate": "0.0003"})
    assert r.json()["rates"]["BTCUSDT"] == "0.0003"
    assert (await sim.order(side="BUY", type="MARKET", quantity="0.010")).status_code == 200
    assert (
        await sim.order(account=short_acct, side="SELL", type="MARKET", quantity="0.020")
    ).status_code == 200
    index = (await sim.http.get("/fapi/v1/premiumIndex", params={"symbol": "BTCUSDT"})).json()
    assert index["lastFundingRate"] == "0.00030000"
    long_before, short_before = await _wallet(sim), await _wallet(sim, short_acct)
    _, ws = await sim.user_stream()
    clock = await _to_next_funding(sim)

    ev = await next_event(ws)
    assert ev["e"] == "ACCOUNT_UPDATE" and ev["a"]["m"] == "FUNDING_FEE"
    # 0.010 BTC x 50000 x 0.0003 = 0.15 USDT paid by the long; cross margin: balance only, no position.
    assert ev["a"]["B"] == [
        {
            "a": "USDT",
            "wb": format(long_before - Decimal("0.15"), ".8f"),
            "cw": format(long_before - Decimal("0.15"), ".8f"),
            "bc": "-0.15000000",
        }
    ]
    assert ev["a"]["P"] == []
    assert await _wallet(sim) == long_before - Decimal("0.15")
    assert await _wallet(sim, short_acct) == short_before + Decimal("0.30")

    rows = (await sim.signed("GET", "/fapi/v1/income", incomeType="FUNDING_FEE")).json()
    funding_time = clock["nextFundingTime"] - 8 * HOUR_MS
    assert rows == [
        {
            "symbol": "BTCUSDT",
            "incomeType": "FUNDING_FEE",
            "income": "-0.15000000",
            "asset": "USDT",
            "info": "FUNDING_FEE",
            "time": funding_time,
            "tranId": rows[0]["tranId"],
            "tradeId": "",
        }
    ]
    assert funding_time % (8 * HOUR_MS) == 0
    settled = (await sim.http.get("/admin/funding")).json()["settlements"]
    assert {
        "symbol": "BTCUSDT",
        "fundingRate": "0.0003",
        "markPrice": "50000",
        "fundingTime": funding_time,
    } in settled
    await ws.close()


async def test_income_ledger_sums_to_the_wallet(sim: Sim) -> None:
    await sim.order(side="BUY", type="MARKET", quantity="0.010")
    await sim.set_price("BTCUSDT", "51000")
    await sim.order(side="SELL", type="MARKET", quantity="0.004")
    await _advance(sim, 24 * HOUR_MS)  # three funding times
    rows = (await sim.signed("GET", "/fapi/v1/income", limit=1000)).json()
    kinds = [r["incomeType"] for r in rows]
    assert kinds[0] == "TRANSFER" and kinds.count("FUNDING_FEE") == 3
    assert kinds.count("COMMISSION") == 2 and kinds.count("REALIZED_PNL") == 1
    pnl = next(r for r in rows if r["incomeType"] == "REALIZED_PNL")
    assert pnl["income"] == "4.00000000" and pnl["symbol"] == "BTCUSDT" and pnl["tradeId"] != ""
    assert sum(Decimal(r["income"]) for r in rows) == await _wallet(sim)
    # Filters and paging: the newest row only, then forward from the deposit by startTime.
    newest = (await sim.signed("GET", "/fapi/v1/income", limit=1)).json()
    assert newest == rows[-1:]
    first_two = (await sim.signed("GET", "/fapi/v1/income", startTime=rows[0]["time"], limit=2)).json()
    assert first_two == rows[:2]
    page_two = (await sim.signed("GET", "/fapi/v1/income", startTime=rows[0]["time"], limit=2, page=2)).json()
    assert page_two == rows[2:4]
    only_eth = (await sim.signed("GET", "/fapi/v1/income", symbol="ETHUSDT")).json()
    assert only_eth == []


async def test_isolated_funding_update_carries_the_position(sim: Sim) -> None:
    r = await sim.signed("POST", "/fapi/v1/marginType", symbol="BTCUSDT", marginType="ISOLATED")
    assert r.status_code == 200, r.text
    await sim.order(side="SELL", type="MARKET", quantity="0.010")
    _, ws = await sim.user_stream()
    await _to_next_funding(sim)
    ev = await next_event(ws)
    assert ev["a"]["m"] == "FUNDING_FEE" and ev["a"]["B"][0]["bc"] == "0.05000000"  # short receives
    assert [p["s"] for p in ev["a"]["P"]] == ["BTCUSDT"] and ev["a"]["P"][0]["mt"] == "isolated"
    await ws.close()


async def test_listen_key_expires_after_an_hour_of_simulated_time(sim: Sim) -> None:
    key, ws = await sim.user_stream()
    await _advance(sim, 59 * 60 * 1000)
    assert (await sim.keyed("PUT", "/fapi/v1/listenKey")).json() == {"listenKey": key}
    await _advance(sim, 59 * 60 * 1000)  # kept alive: still there
    await _advance(sim, 2 * 60 * 1000)
    ev = await next_event(ws)
    assert ev == {"e": "listenKeyExpired", "E": ev["E"], "listenKey": key}
    assert (await sim.keyed("PUT", "/fapi/v1/listenKey")).json()["code"] == -1125
    await ws.close()


async def test_connection_closes_after_24_hours_even_with_keepalives(sim: Sim) -> None:
    key, ws = await sim.user_stream()
    for _ in range(47):  # 23.5 h, kept alive every 30 minutes
        await _advance(sim, 30 * 60 * 1000)
        assert (await sim.keyed("PUT", "/fapi/v1/listenKey")).json() == {"listenKey": key}
    await _advance(sim, 30 * 60 * 1000)
    msg = await ws.receive(timeout=3)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    # Only the connection ended: the key lives on and a new connection works.
    assert (await sim.keyed("PUT", "/fapi/v1/listenKey")).json() == {"listenKey": key}
    ws2 = await sim.session.ws_connect(f"{sim.ws_base}/private/ws?listenKey={key}")
    await sim.order(side="BUY", type="MARKET", quantity="0.010")
    assert (await next_event(ws2))["e"] == "ORDER_TRADE_UPDATE"
    await ws2.close()


async def test_trade_lite_precedes_the_fill_for_subscribers_only(sim: Sim) -> None:
    key = (await sim.keyed("POST", "/fapi/v1/listenKey")).json()["listenKey"]
    lite_ws = await sim.session.ws_connect(
        f"{sim.ws_base}/private/ws?listenKey={key}&events=ORDER_TRADE_UPDATE/TRADE_LITE"
    )
    plain_ws = await sim.session.ws_connect(f"{sim.ws_base}/private/ws?listenKey={key}")
    await sim.order(side="BUY", type="MARKET", quantity="0.010", newClientOrderId="lite-1")
    events = [await next_event(lite_ws) for _ in range(3)]
    assert [e["e"] for e in events] == ["ORDER_TRADE_UPDATE", "TRADE_LITE", "ORDER_TRADE_UPDATE"]
    lite, fill = events[1], events[2]["o"]
    assert set(lite) == {"e", "E", "T", "s", "q", "p", "m", "c", "S", "L", "l", "t", "i"}
    assert (lite["s"], lite["c"], lite["S"], lite["l"], lite["L"], lite["t"], lite["i"], lite["m"]) == (
        "BTCUSDT",
        "lite-1",
        "BUY",
        fill["l"],
        fill["L"],
        fill["t"],
        fill["i"],
        False,
    )
    plain = [await next_event(plain_ws) for _ in range(3)]
    assert [e["e"] for e in plain] == ["ORDER_TRADE_UPDATE", "ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE"]
    await lite_ws.close()
    await plain_ws.close()


async def test_account_v3_and_balance_follow_positions_fees_and_funding(sim: Sim) -> None:
    await sim.order(side="BUY", type="MARKET", quantity="0.010")  # taker fee 0.25
    await _to_next_funding(sim)  # funding 0.05 at the default 0.0001
    await sim.set_price("BTCUSDT", "50500")
    doc = (await sim.signed("GET", "/fapi/v3/account")).json()
    wallet = Decimal(100000) - Decimal("0.25") - Decimal("0.05")
    assert Decimal(doc["totalWalletBalance"]) == wallet
    assert Decimal(doc["totalUnrealizedProfit"]) == Decimal(5)
    assert Decimal(doc["totalMarginBalance"]) == wallet + 5
    assert "feeTier" not in doc and "marginAvailable" not in doc["assets"][0]
    assert doc["positions"] == [
        {
            "symbol": "BTCUSDT",
            "positionSide": "BOTH",
            "positionAmt": "0.010",
            "unrealizedProfit": "5.00000000",
            "isolatedMargin": "0.00000000",
            "notional": "505.00000000",
            "isolatedWallet": "0.00000000",
            "initialMargin": "25.25000000",
            "maintMargin": "2.02000000",  # 505 notional * 0.4 % (bracket 1)
            "updateTime": doc["positions"][0]["updateTime"],
        }
    ]
    balance = (await sim.signed("GET", "/fapi/v2/balance")).json()[0]
    assert Decimal(balance["balance"]) == wallet and balance["availableBalance"] == doc["availableBalance"]
