"""Margin model of the simulator: liquidation prices (pure math and as ``positionRisk`` shows them) and the
``MARGIN_CALL`` user-stream event when a price move takes a leveraged position past the threshold."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

import aiohttp

from sim_helpers import Sim, new_account, next_event
from usdm_simulator.margin import account_legs, liquidation_price, margin_ratio
from usdm_simulator.margin_calls import MARGIN_CALL_RATIO
from usdm_simulator.models import Account

D = Decimal
EIGHT = D("0.00000001")
MMR1 = D("0.004")  # first bracket (notional < 50 000): maintMarginRatio 0.4 %, cum 0


def _account(wallet: str, **positions: tuple[str, str]) -> Account:
    """An account holding one-way positions ``SYMBOL=(signed amount, entry)``."""
    account = Account(key="k", secret="s", wallet=D(wallet), leverage=20)
    for symbol, (amount, entry) in positions.items():
        pos = account.position(symbol)
        pos.amount, pos.entry_price = D(amount), D(entry)
    return account


def _liq(account: Account, prices: dict[str, str], symbol: str, side: str = "BOTH") -> Decimal:
    legs = account_legs(account, {s: D(p) for s, p in prices.items()})
    leg = next(leg for leg in legs if (leg.symbol, leg.position_side) == (symbol, side))
    return liquidation_price(account, legs, leg)


# ------------------------------------------------------------------ the formula, by hand
def test_cross_long_and_short_liquidation_price_is_binances_formula() -> None:
    # LP = (WB - TMM1 + UPNL1 + cumB - Side1*Position1*EP1) / (Position1*MMR - Side1*Position1)
    long = _account("1000", BTCUSDT=("0.3", "50000"))
    assert _liq(long, {"BTCUSDT": "50000"}, "BTCUSDT") == (D(1000) - D(15000)) / (D("0.0012") - D("0.3"))
    assert _liq(long, {"BTCUSDT": "50000"}, "BTCUSDT").quantize(EIGHT) == D("46854.08299866")
    short = _account("1000", BTCUSDT=("-0.3", "50000"))
    assert _liq(short, {"BTCUSDT": "50000"}, "BTCUSDT") == (D(1000) + D(15000)) / (D("0.0012") + D("0.3"))
    assert _liq(short, {"BTCUSDT": "50000"}, "BTCUSDT").quantize(EIGHT) == D("53120.84993360")


def test_cross_liquidation_price_counts_the_other_positions() -> None:
    # ETH short 2 @ 3000, mark 3100: UPNL1 = -200, TMM1 = 6200 * 0.004 = 24.8.
    account = _account("1000", BTCUSDT=("0.3", "50000"), ETHUSDT=("-2", "3000"))
    lp = _liq(account, {"BTCUSDT": "50000", "ETHUSDT": "3100"}, "BTCUSDT")
    assert lp == (D(1000) - D("24.8") + D(-200) - D(15000)) / (D("0.0012") - D("0.3"))


def test_isolated_liquidation_price_uses_the_position_margin_only() -> None:
    # Isolated wallet = 0.3 * 50000 / 20 = 750; the cross wallet and other positions do not count.
    account = _account("1000", BTCUSDT=("0.3", "50000"), ETHUSDT=("-2", "3000"))
    account.isolated.add("BTCUSDT")
    lp = _liq(account, {"BTCUSDT": "50000", "ETHUSDT": "3100"}, "BTCUSDT")
    assert lp == (D(750) - D(15000)) / (D("0.0012") - D("0.3"))
    assert lp.quantize(EIGHT) == D("47690.76305221")


def test_bracket_is_the_one_holding_the_notional_at_the_liquidation_price() -> None:
    # 1.1 BTC: 55 000 notional at the mark (bracket 2: MMR 0.5 %, cum 50) but ~49 200 at the liquidation
    # price, so bracket 1 (MMR 0.4 %, cum 0) is the one that makes margin balance = maintenance margin.
    account = _account("6000", BTCUSDT=("1.1", "50000"))
    lp = _liq(account, {"BTCUSDT": "50000"}, "BTCUSDT")
    assert lp == (D(6000) - D(55000)) / (D("1.1") * MMR1 - D("1.1"))
    assert D("1.1") * lp < 50000
    big = _account("100000", BTCUSDT=("20", "50000"))  # bracket 3 (MMR 0.65 %, cum 950) at ~905 000
    assert _liq(big, {"BTCUSDT": "50000"}, "BTCUSDT") == (D(100950) - D(1000000)) / (D("0.13") - D(20))


def test_hedge_mode_cross_solves_both_sides_together() -> None:
    # Binance's three-position form: (WB + cumL + cumS - PosL*EPL + PosS*EPS) / (PosL*MMRL + PosS*MMRS
    # - PosL + PosS), and both rows show it.
    account = Account(key="k", secret="s", wallet=D(1000), leverage=20, dual_side=True)
    account.position("BTCUSDT", "LONG").amount = D("0.3")
    account.position("BTCUSDT", "SHORT").amount = D("-0.1")
    for side in ("LONG", "SHORT"):
        account.position("BTCUSDT", side).entry_price = D(50000)
    expected = (D(1000) - D(15000) + D(5000)) / (D("0.0012") + D("0.0004") - D("0.3") + D("0.1"))
    assert _liq(account, {"BTCUSDT": "50000"}, "BTCUSDT", "LONG") == expected
    assert _liq(account, {"BTCUSDT": "50000"}, "BTCUSDT", "SHORT") == expected


def test_no_liquidation_price_when_it_would_not_be_positive() -> None:
    rich = _account("100000", BTCUSDT=("0.3", "50000"))  # the wallet covers a fall to 0
    assert _liq(rich, {"BTCUSDT": "50000"}, "BTCUSDT") == 0


def test_margin_ratio_is_maintenance_margin_over_margin_balance() -> None:
    account = _account("1000", BTCUSDT=("0.3", "50000"))
    legs = account_legs(account, {"BTCUSDT": D(47000)})
    assert margin_ratio(account, legs, "cross") == D("0.3") * 47000 * MMR1 / (1000 + D("0.3") * -3000)
    assert margin_ratio(account, [], "cross") is None


# ------------------------------------------------------------------ over the API
async def _open(sim: Sim, account: Any, side: str, isolated: bool = False) -> dict[str, Any]:
    if isolated:
        r = await sim.signed("POST", "/fapi/v1/marginType", account, symbol="BTCUSDT", marginType="ISOLATED")
        assert r.status_code == 200, r.text
    r = await sim.order(account, side=side, type="MARKET", quantity="0.300")
    assert r.status_code == 200, r.text
    rows = (await sim.signed("GET", "/fapi/v2/positionRisk", account, symbol="BTCUSDT")).json()
    assert len(rows) == 1
    row: dict[str, Any] = rows[0]
    return row


def _close_to(actual: str, expected: Decimal) -> bool:
    return abs(D(actual) - expected) <= EIGHT


async def test_position_risk_shows_the_liquidation_price(make_sim: Any) -> None:
    accounts = [new_account() for _ in range(3)]
    for a in accounts:
        a.balance_usdt = D(1000)
    sim = await make_sim(accounts=accounts, taker_fee_rate="0", maker_fee_rate="0")
    long_acct, short_acct, isolated_acct = accounts

    row = await _open(sim, long_acct, "BUY")
    entry = D(row["entryPrice"])  # 50000 with reference matching
    assert _close_to(row["liquidationPrice"], (1000 - D("0.3") * entry) / (D("0.3") * MMR1 - D("0.3")))
    assert _close_to(row["maintMargin"], D("0.3") * 50000 * MMR1)
    v3 = (await sim.signed("GET", "/fapi/v3/positionRisk", long_acct)).json()
    assert [r["liquidationPrice"] for r in v3] == [row["liquidationPrice"]]

    row = await _open(sim, short_acct, "SELL")
    entry = D(row["entryPrice"])
    assert _close_to(row["liquidationPrice"], (1000 + D("0.3") * entry) / (D("0.3") * MMR1 + D("0.3")))

    row = await _open(sim, isolated_acct, "BUY", isolated=True)
    entry = D(row["entryPrice"])
    wallet = D("0.3") * entry / 20
    assert _close_to(row["isolatedWallet"], wallet) and row["marginType"] == "isolated"
    assert _close_to(row["liquidationPrice"], (wallet - D("0.3") * entry) / (D("0.3") * MMR1 - D("0.3")))
    account = (await sim.signed("GET", "/fapi/v2/account", isolated_acct)).json()
    assert _close_to(account["totalCrossWalletBalance"], 1000 - wallet)
    assert _close_to(account["totalMaintMargin"], D("0.3") * 50000 * MMR1)

    flat = (await sim.signed("GET", "/fapi/v2/positionRisk", long_acct, symbol="ETHUSDT")).json()
    assert flat[0]["liquidationPrice"] == "0"


async def _no_event_before_sentinel(sim: Sim, account: Any, ws: Any) -> None:
    """Assert nothing is queued on ``ws``: a leverage change's ACCOUNT_CONFIG_UPDATE is the next event."""
    r = await sim.signed("POST", "/fapi/v1/leverage", account, symbol="BTCUSDT", leverage=10)
    assert r.status_code == 200, r.text
    assert (await next_event(ws))["e"] == "ACCOUNT_CONFIG_UPDATE"


async def _drain(ws: Any) -> None:
    while True:
        try:
            await next_event(ws, timeout=0.3)
        except TimeoutError:
            return


async def test_margin_call_once_per_crossing_of_the_threshold(make_sim: Any) -> None:
    account = new_account()
    account.balance_usdt = D(1000)
    sim = await make_sim(accounts=[account], taker_fee_rate="0", maker_fee_rate="0")
    _, ws = await sim.user_stream()
    entry = D((await _open(sim, account, "BUY"))["entryPrice"])
    await _drain(ws)
    # Ratio 0.0012 P / (1000 + 0.3 (P - entry)) reaches 0.8 at P80; above P80 it is lower.
    p80 = (D("0.24") * entry - 800) / (D("0.24") - D("0.0012"))
    just_safe = p80.quantize(D("0.1"), ROUND_CEILING) + D("0.5")
    called_at = p80.quantize(D("0.1"), ROUND_FLOOR) - D("0.5")

    await sim.set_price("BTCUSDT", str(just_safe))
    await _no_event_before_sentinel(sim, account, ws)

    await sim.set_price("BTCUSDT", str(called_at))
    event = await next_event(ws)
    assert set(event) == {"e", "E", "cw", "p"} and event["e"] == "MARGIN_CALL"
    assert event["cw"] == "1000.00000000"
    mm = D("0.3") * called_at * MMR1
    assert mm / (1000 + D("0.3") * (called_at - entry)) >= MARGIN_CALL_RATIO
    assert event["p"] == [
        {
            "s": "BTCUSDT",
            "ps": "BOTH",
            "pa": "0.300",
            "mt": "CROSSED",
            "iw": "0.00000000",
            "mp": str(called_at.quantize(EIGHT)),
            "up": str((D("0.3") * (called_at - entry)).quantize(EIGHT)),
            "mm": str(mm.quantize(EIGHT)),
        }
    ]

    await sim.set_price("BTCUSDT", str(called_at - 5))  # still past the threshold: no second call
    await _no_event_before_sentinel(sim, account, ws)
    await sim.set_price("BTCUSDT", "50000")  # back below it
    await sim.set_price("BTCUSDT", str(called_at))  # and across again: called again
    assert (await next_event(ws))["e"] == "MARGIN_CALL"
    await ws.close()


async def test_isolated_margin_call_names_the_position_without_cross_wallet(make_sim: Any) -> None:
    account = new_account()
    account.balance_usdt = D(1000)
    sim = await make_sim(accounts=[account], taker_fee_rate="0", maker_fee_rate="0")
    _, ws = await sim.user_stream()
    row = await _open(sim, account, "SELL", isolated=True)
    await _drain(ws)
    liquidation = D(row["liquidationPrice"])
    await sim.set_price("BTCUSDT", str(liquidation.quantize(D("0.1"), ROUND_FLOOR) - 10))
    event = await next_event(ws)
    assert event["e"] == "MARGIN_CALL" and "cw" not in event
    (position,) = event["p"]
    assert (position["mt"], position["pa"], position["ps"]) == ("ISOLATED", "-0.300", "BOTH")
    assert D(position["iw"]) == D("0.3") * D(row["entryPrice"]) / 20
    await ws.close()


async def test_reset_forgets_margin_calls(make_sim: Any) -> None:
    account = new_account()
    account.balance_usdt = D(1000)
    sim = await make_sim(accounts=[account], taker_fee_rate="0", maker_fee_rate="0")
    for _ in range(2):  # the second time only comes through if the reset cleared the first call
        _, ws = await sim.user_stream()
        row = await _open(sim, account, "BUY")
        await _drain(ws)
        await sim.set_price("BTCUSDT", str(D(row["liquidationPrice"]).quantize(D("0.1"), ROUND_CEILING) + 10))
        assert (await next_event(ws))["e"] == "MARGIN_CALL"
        assert (await sim.http.post("/admin/reset")).status_code == 200
        msg = await ws.receive(timeout=3)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
