"""User-data-stream payloads (``ORDER_TRADE_UPDATE``, ``ACCOUNT_UPDATE``, ``MARGIN_CALL``, …) with every
field Binance sends."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from usdm_simulator.margin import Leg, account_legs, cross_wallet
from usdm_simulator.models import ZERO, Account, Order, Position, Trade, fmt


def order_trade_update(
    order: Order,
    execution_type: str,
    now_ms: int,
    trade: Trade | None = None,
    bids_notional: Decimal = ZERO,
    asks_notional: Decimal = ZERO,
) -> dict[str, Any]:
    """Return an ``ORDER_TRADE_UPDATE`` for ``order`` after an event of ``execution_type``.

    ``execution_type`` is NEW, TRADE, CANCELED, EXPIRED or AMENDMENT; ``trade`` is the fill for TRADE.
    """
    pp, qp = order.spec.price_precision, order.spec.quantity_precision
    o: dict[str, Any] = {
        "s": order.symbol,
        "c": order.client_order_id,
        "S": order.side,
        "o": order.type,
        "f": order.time_in_force,
        "q": fmt(order.orig_qty, qp),
        "p": fmt(order.price, pp),
        "ap": fmt(order.avg_price, pp + 3) if order.executed_qty else "0",
        "sp": "0",
        "x": execution_type,
        "X": order.status,
        "i": order.order_id,
        "l": fmt(trade.qty, qp) if trade else "0",
        "z": fmt(order.executed_qty, qp),
        "L": fmt(trade.price, pp) if trade else "0",
        "N": "USDT",
        "n": fmt(trade.commission, 8) if trade else "0",
        "T": trade.time_ms if trade else now_ms,
        "t": trade.trade_id if trade else 0,
        "b": fmt(bids_notional, 5),
        "a": fmt(asks_notional, 5),
        "m": trade.maker if trade else False,
        "R": order.reduce_only,
        "wt": "CONTRACT_PRICE",
        "ot": order.type,
        "ps": order.position_side,
        "cp": False,
        "rp": fmt(trade.realized_pnl, 8) if trade else "0",
        "pP": False,
        "si": 0,
        "ss": 0,
        "V": order.stp_mode,
        "pm": order.price_match,
        "gtd": order.good_till_date,
        "er": str(order.expiry_reason),
    }
    return {"e": "ORDER_TRADE_UPDATE", "T": now_ms, "E": now_ms, "o": o}


def account_update(
    account: Account,
    symbol: str,
    position: Position,
    prices: Mapping[str, Decimal],
    now_ms: int,
    balance_change: Decimal = ZERO,
) -> dict[str, Any]:
    """Return an ``ACCOUNT_UPDATE`` (reason ORDER) with the USDT balance and the changed position.

    ``cw`` is the cross wallet (the wallet less isolated margin) and ``iw`` the position's isolated
    wallet, as ``usdm_simulator.margin`` and the REST account views reckon them.
    """
    mark = prices[symbol]
    unrealized = (mark - position.entry_price) * position.amount if position.amount else ZERO
    legs = account_legs(account, prices)
    own = next((g for g in legs if g.symbol == symbol and g.position_side == position.position_side), None)
    return {
        "e": "ACCOUNT_UPDATE",
        "E": now_ms,
        "T": now_ms,
        "a": {
            "m": "ORDER",
            "B": [
                {
                    "a": "USDT",
                    "wb": fmt(account.wallet, 8),
                    "cw": fmt(cross_wallet(account, legs), 8),
                    "bc": fmt(balance_change, 8),
                }
            ],
            "P": [
                {
                    "s": symbol,
                    "pa": format(position.amount, "f"),
                    "ep": fmt(position.entry_price, 8),
                    "bep": fmt(position.entry_price, 8),
                    "cr": fmt(position.realized, 8),
                    "up": fmt(unrealized, 8),
                    "mt": "isolated" if symbol in account.isolated else "cross",
                    "iw": fmt(own.isolated_wallet, 8) if own is not None else "0",
                    "ps": position.position_side,
                }
            ],
        },
    }


def account_config_update(symbol: str, leverage: int, now_ms: int) -> dict[str, Any]:
    """Return the ``ACCOUNT_CONFIG_UPDATE`` sent when a symbol's leverage changes."""
    return {"e": "ACCOUNT_CONFIG_UPDATE", "E": now_ms, "T": now_ms, "ac": {"s": symbol, "l": leverage}}


def listen_key_expired(listen_key: str, now_ms: int) -> dict[str, Any]:
    """Return the ``listenKeyExpired`` event."""
    return {"e": "listenKeyExpired", "E": now_ms, "listenKey": listen_key}


def funding_update(
    account: Account,
    symbol: str,
    position: Position,
    prices: Mapping[str, Decimal],
    fee: Decimal,
    now_ms: int,
    with_position: bool,
) -> dict[str, Any]:
    """Return the ``ACCOUNT_UPDATE`` (reason FUNDING_FEE) for a funding ``fee`` charged on ``position``.

    ``bc`` is the fee (negative when paid). Binance lists the position only in isolated margin
    (``with_position``); in cross margin ``P`` is empty.
    """
    event = account_update(account, symbol, position, prices, now_ms, balance_change=fee)
    event["a"]["m"] = "FUNDING_FEE"
    if not with_position:
        event["a"]["P"] = []
    return event


def trade_lite(order_event: dict[str, Any]) -> dict[str, Any]:
    """Return the ``TRADE_LITE`` event for an ``ORDER_TRADE_UPDATE`` of execution type TRADE."""
    o = order_event["o"]
    return {
        "e": "TRADE_LITE",
        "E": order_event["E"],
        "T": o["T"],
        "s": o["s"],
        "q": o["q"],
        "p": o["p"],
        "m": o["m"],
        "c": o["c"],
        "S": o["S"],
        "L": o["L"],
        "l": o["l"],
        "t": o["t"],
        "i": o["i"],
    }


def margin_call(legs: list[Leg], cross_wallet: Decimal | None, now_ms: int) -> dict[str, Any]:
    """Return a ``MARGIN_CALL`` for the positions ``legs`` of the pools that reached the threshold.

    ``cw`` (cross wallet balance) is sent only when the call is about cross positions (``cross_wallet``
    given), as Binance documents; ``mt`` is ``CROSSED`` or ``ISOLATED``, ``iw`` the isolated wallet
    (0 in cross), ``mm`` the maintenance margin required.
    """
    event: dict[str, Any] = {"e": "MARGIN_CALL", "E": now_ms}
    if cross_wallet is not None:
        event["cw"] = fmt(cross_wallet, 8)
    event["p"] = [
        {
            "s": leg.symbol,
            "ps": leg.position_side,
            "pa": format(leg.amount, "f"),
            "mt": "ISOLATED" if leg.isolated else "CROSSED",
            "iw": fmt(leg.isolated_wallet, 8),
            "mp": fmt(leg.mark, 8),
            "up": fmt(leg.unrealized, 8),
            "mm": fmt(leg.maint_margin, 8),
        }
        for leg in legs
    ]
    return event
