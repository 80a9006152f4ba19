"""Handlers of market-data, account, position and listenKey endpoints."""

from __future__ import annotations

from typing import Any

from usdm_simulator import errors
from usdm_simulator.brackets import max_notional
from usdm_simulator.margin import account_legs, cross_wallet, liquidation_price
from usdm_simulator.models import ZERO, Account, fmt
from usdm_simulator.pipeline import Call
from usdm_simulator.ratelimit import rate_limit_rules
from usdm_simulator.symbols import exchange_info


def server_time(call: Call) -> dict[str, Any]:
    """``GET /fapi/v1/time``: ``{"serverTime": ms}``."""
    return {"serverTime": call.state.clock.now_ms()}


def ping(call: Call) -> dict[str, Any]:
    """``GET /fapi/v1/ping``: ``{}``."""
    return {}


def exchange_info_doc(call: Call) -> dict[str, Any]:
    """``GET /fapi/v1/exchangeInfo``: symbols, filters and rate limits."""
    cfg = call.state.config
    limits = rate_limit_rules(cfg.rate_limits)
    return exchange_info(call.state.engine.specs, limits, cfg.max_num_orders, call.state.clock.now_ms())


def _symbols(call: Call) -> list[str]:
    symbol = call.params.get("symbol")
    if symbol is None:
        return list(call.state.engine.specs)
    if symbol not in call.state.engine.specs:
        raise errors.error(errors.BAD_SYMBOL)
    return [symbol]


def premium_index(call: Call) -> Any:
    """``GET /fapi/v1/premiumIndex``: mark/index price (= the reference price), one symbol or all, with the
    symbol's funding rate (``POST /admin/funding``) and the next funding time on the simulated clock."""
    now = call.state.clock.now_ms()
    funding = call.state.funding
    docs = [
        {
            "symbol": s,
            "markPrice": format(call.state.engine.prices[s], "f"),
            "indexPrice": format(call.state.engine.prices[s], "f"),
            "estimatedSettlePrice": "0",
            "lastFundingRate": fmt(funding.rates[s], 8),
            "interestRate": "0.00010000",
            "nextFundingTime": funding.next_funding_ms,
            "time": now,
        }
        for s in _symbols(call)
    ]
    return docs[0] if "symbol" in call.params else docs


def ticker_price(call: Call) -> Any:
    """``GET /fapi/v1/ticker/price`` and ``/fapi/v2/ticker/price``: latest (reference) price."""
    now = call.state.clock.now_ms()
    docs = [
        {"symbol": s, "price": format(call.state.engine.prices[s], "f"), "time": now} for s in _symbols(call)
    ]
    return docs[0] if "symbol" in call.params else docs


def _position_rows(call: Call, account: Account, only_active: bool) -> list[dict[str, Any]]:
    """One row per symbol and position side: ``BOTH`` in one-way mode, ``LONG`` and ``SHORT`` in hedge.

    ``maintMargin``, ``isolatedWallet`` and ``liquidationPrice`` come from ``usdm_simulator.margin``;
    ``isolatedMargin`` is the isolated wallet plus the unrealised PnL, as Binance reports it.
    """
    rows = []
    engine = call.state.engine
    legs = {(leg.symbol, leg.position_side): leg for leg in account_legs(account, engine.prices)}
    sides = ("LONG", "SHORT") if account.dual_side else ("BOTH",)
    for symbol, side in ((s, side) for s in engine.specs for side in sides):
        pos = account.positions.get(symbol) if side == "BOTH" else account.sided_positions.get((symbol, side))
        amount = pos.amount if pos else ZERO
        if only_active and amount == 0 and not engine.open_orders(account, symbol):
            continue
        mark = engine.prices[symbol]
        entry = pos.entry_price if pos else ZERO
        unrealized = (mark - entry) * amount
        leverage = account.leverage_for(symbol)
        margin = abs(amount) * mark / leverage
        isolated = symbol in account.isolated
        leg = legs.get((symbol, side))
        wallet = leg.isolated_wallet if leg else ZERO
        liquidation = liquidation_price(account, list(legs.values()), leg) if leg else ZERO
        rows.append(
            {
                "symbol": symbol,
                "positionAmt": format(amount, "f"),
                "entryPrice": fmt(entry, 8),
                "breakEvenPrice": fmt(entry, 8),
                "markPrice": fmt(mark, 8),
                "unRealizedProfit": fmt(unrealized, 8),
                "unrealizedProfit": fmt(unrealized, 8),
                "liquidationPrice": fmt(liquidation, 8) if liquidation else "0",
                "leverage": str(leverage),
                "maxNotionalValue": str(max_notional(leverage)),
                "marginType": "isolated" if isolated else "cross",
                "isolatedMargin": fmt(wallet + unrealized if isolated else ZERO, 8),
                "isAutoAddMargin": "false",
                "positionSide": side,
                "notional": fmt(amount * mark, 8),
                "isolatedWallet": fmt(wallet, 8),
                "initialMargin": fmt(margin, 8),
                "maintMargin": fmt(leg.maint_margin if leg else ZERO, 8),
                "positionInitialMargin": fmt(margin, 8),
                "openOrderInitialMargin": "0",
                "isolated": isolated,
                "maxNotional": str(max_notional(leverage)),
                "updateTime": pos.update_time_ms if pos else 0,
                "marginAsset": "USDT",
            }
        )
    return rows


def position_risk(call: Call) -> list[dict[str, Any]]:
    """``GET /fapi/v2/positionRisk``: one row per symbol (or for ``symbol``), flat ones included."""
    rows = _position_rows(call, call.acct, only_active=False)
    symbol = call.params.get("symbol")
    if symbol is not None:
        _symbols(call)
        rows = [r for r in rows if r["symbol"] == symbol]
    return rows


def position_risk_v3(call: Call) -> list[dict[str, Any]]:
    """``GET /fapi/v3/positionRisk``: only symbols with a position or open orders."""
    rows = _position_rows(call, call.acct, only_active=True)
    symbol = call.params.get("symbol")
    return [r for r in rows if symbol is None or r["symbol"] == symbol]


def _totals(call: Call, account: Account) -> dict[str, str]:
    """The account totals; maintenance margin and the cross wallet from ``usdm_simulator.margin`` (the cross
    figures leave out isolated positions)."""
    engine = call.state.engine
    legs = account_legs(account, engine.prices)
    unrealized = sum((leg.unrealized for leg in legs), ZERO)
    cross_unrealized = sum((leg.unrealized for leg in legs if not leg.isolated), ZERO)
    position_margin = sum((abs(leg.amount) * leg.mark / leg.leverage for leg in legs), ZERO)
    available = engine.available_balance(account)
    order_margin = account.wallet + unrealized - position_margin - available
    return {
        "totalInitialMargin": fmt(position_margin + order_margin, 8),
        "totalMaintMargin": fmt(sum((leg.maint_margin for leg in legs), ZERO), 8),
        "totalWalletBalance": fmt(account.wallet, 8),
        "totalUnrealizedProfit": fmt(unrealized, 8),
        "totalMarginBalance": fmt(account.wallet + unrealized, 8),
        "totalPositionInitialMargin": fmt(position_margin, 8),
        "totalOpenOrderInitialMargin": fmt(order_margin, 8),
        "totalCrossWalletBalance": fmt(cross_wallet(account, legs), 8),
        "totalCrossUnPnl": fmt(cross_unrealized, 8),
        "availableBalance": fmt(available, 8),
        "maxWithdrawAmount": fmt(max(available, ZERO), 8),
    }


def account_v2(call: Call) -> dict[str, Any]:
    """``GET /fapi/v2/account``: totals, the USDT asset and positions of every symbol."""
    account = call.acct
    totals = _totals(call, account)
    now = call.state.clock.now_ms()
    asset = {
        "asset": "USDT",
        "walletBalance": totals["totalWalletBalance"],
        "unrealizedProfit": totals["totalUnrealizedProfit"],
        "marginBalance": totals["totalMarginBalance"],
        "maintMargin": totals["totalMaintMargin"],
        "initialMargin": totals["totalInitialMargin"],
        "positionInitialMargin": totals["totalPositionInitialMargin"],
        "openOrderInitialMargin": totals["totalOpenOrderInitialMargin"],
        "crossWalletBalance": totals["totalCrossWalletBalance"],
        "crossUnPnl": totals["totalCrossUnPnl"],
        "availableBalance": totals["availableBalance"],
        "maxWithdrawAmount": totals["maxWithdrawAmount"],
        "marginAvailable": True,
        "updateTime": now,
    }
    return {
        "feeTier": 0,
        "feeBurn": False,
        "canTrade": True,
        "canDeposit": True,
        "canWithdraw": True,
        "updateTime": 0,
        "multiAssetsMargin": False,
        "tradeGroupId": -1,
        **totals,
        "assets": [asset],
        "positions": _position_rows(call, account, only_active=False),
    }


_V3_ASSET_FIELDS = (
    "asset",
    "walletBalance",
    "unrealizedProfit",
    "marginBalance",
    "maintMargin",
    "initialMargin",
    "positionInitialMargin",
    "openOrderInitialMargin",
    "crossWalletBalance",
    "crossUnPnl",
    "availableBalance",
    "maxWithdrawAmount",
    "updateTime",
)
_V3_POSITION_FIELDS = (
    "symbol",
    "positionSide",
    "positionAmt",
    "unrealizedProfit",
    "isolatedMargin",
    "notional",
    "isolatedWallet",
    "initialMargin",
    "maintMargin",
    "updateTime",
)


def account_v3(call: Call) -> dict[str, Any]:
    """``GET /fapi/v3/account``: totals, assets and only the active positions, in v3's narrower shapes
    (no fee/can* fields; positions with only the ten fields Binance lists for v3)."""
    doc = account_v2(call)
    for key in (
        "feeTier",
        "feeBurn",
        "canTrade",
        "canDeposit",
        "canWithdraw",
        "updateTime",
        "multiAssetsMargin",
        "tradeGroupId",
    ):
        doc.pop(key)
    doc["assets"] = [{k: a[k] for k in _V3_ASSET_FIELDS} for a in doc["assets"]]
    doc["positions"] = [
        {k: p[k] for k in _V3_POSITION_FIELDS} for p in _position_rows(call, call.acct, only_active=True)
    ]
    return doc


def balance_v2(call: Call) -> list[dict[str, Any]]:
    """``GET /fapi/v2/balance``: the USDT balance row."""
    totals = _totals(call, call.acct)
    return [
        {
            "accountAlias": "SgsR",
            "asset": "USDT",
            "balance": totals["totalWalletBalance"],
            "crossWalletBalance": totals["totalCrossWalletBalance"],
            "crossUnPnl": totals["totalCrossUnPnl"],
            "availableBalance": totals["availableBalance"],
            "maxWithdrawAmount": totals["maxWithdrawAmount"],
            "marginAvailable": True,
            "updateTime": call.state.clock.now_ms(),
        }
    ]


def commission_rate(call: Call) -> dict[str, Any]:
    """``GET /fapi/v1/commissionRate``: the configured maker and taker rates."""
    symbol = _symbols(call)[0] if "symbol" in call.params else "BTCUSDT"
    cfg = call.state.config
    return {
        "symbol": symbol,
        "makerCommissionRate": format(cfg.maker_fee_rate, "f"),
        "takerCommissionRate": format(cfg.taker_fee_rate, "f"),
    }


def order_rate_limits(call: Call) -> list[dict[str, Any]]:
    """``GET /fapi/v1/rateLimit/order``: the account's own ORDERS limits (per 10 s, per minute)."""
    return call.state.limiter.order_limits(call.acct.key).rules()


def listen_key_create(call: Call) -> dict[str, Any]:
    """``POST /fapi/v1/listenKey``: the account's live key (extended) or a new one."""
    return {"listenKey": call.state.streams.create(call.acct.key)}


def listen_key_keepalive(call: Call) -> dict[str, Any]:
    """``PUT /fapi/v1/listenKey``: extend the key by 60 minutes; -1125 if it does not exist."""
    return {"listenKey": call.state.streams.keepalive(call.acct.key)}


def listen_key_close(call: Call) -> dict[str, Any]:
    """``DELETE /fapi/v1/listenKey``: end the stream; ``{}``."""
    call.state.streams.close(call.acct.key)
    return {}
