"""Conditional (algo) order records and their book; the trigger rules live in ``AlgoOrder.condition_met``.

STOP/STOP_MARKET trigger for a BUY when price >= trigger and for a SELL when price <= trigger; TAKE_PROFIT
and TAKE_PROFIT_MARKET the other way round; a trailing stop activates at ``activatePrice`` and triggers when
the price retraces ``callbackRate`` percent from its best since activation.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from usdm_simulator import errors
from usdm_simulator.models import ZERO, Account, fmt
from usdm_simulator.symbols import SymbolSpec


@dataclass
class AlgoOrder:
    """One conditional order waiting for (or past) its trigger."""

    algo_id: int
    client_algo_id: str
    account_key: str
    spec: SymbolSpec
    side: str
    order_type: str
    quantity: Decimal
    price: Decimal
    trigger_price: Decimal
    time_in_force: str
    reduce_only: bool
    activate_price: Decimal
    callback_rate: Decimal
    create_time: int
    update_time: int
    working_type: str = "CONTRACT_PRICE"
    price_protect: bool = False
    close_position: bool = False
    status: str = "NEW"
    trigger_time: int = 0
    actual_order_id: str = ""
    activated: bool = False
    extreme: Decimal = ZERO
    reject_reason: str = ""

    def to_json(self) -> dict[str, Any]:
        """Render as Binance's algo order object."""
        pp, qp = self.spec.price_precision, self.spec.quantity_precision
        return {
            "algoId": self.algo_id,
            "clientAlgoId": self.client_algo_id,
            "algoType": "CONDITIONAL",
            "orderType": self.order_type,
            "symbol": self.spec.symbol,
            "side": self.side,
            "positionSide": "BOTH",
            "timeInForce": self.time_in_force,
            "quantity": fmt(self.quantity, qp),
            "algoStatus": self.status,
            "actualOrderId": self.actual_order_id,
            "triggerPrice": fmt(self.trigger_price, pp),
            "price": fmt(self.price, pp),
            "icebergQuantity": None,
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "workingType": self.working_type,
            "priceMatch": "NONE",
            "closePosition": self.close_position,
            "priceProtect": self.price_protect,
            "reduceOnly": self.reduce_only,
            "activatePrice": fmt(self.activate_price, pp),
            "callbackRate": format(self.callback_rate, "f"),
            "createTime": self.create_time,
            "updateTime": self.update_time,
            "triggerTime": self.trigger_time,
            "goodTillDate": 0,
        }

    def event(self, now_ms: int) -> dict[str, Any]:
        """Return the ``ALGO_UPDATE`` event for the current state."""
        pp, qp = self.spec.price_precision, self.spec.quantity_precision
        return {
            "e": "ALGO_UPDATE",
            "T": now_ms,
            "E": now_ms,
            "o": {
                "caid": self.client_algo_id,
                "aid": self.algo_id,
                "at": "CONDITIONAL",
                "o": self.order_type,
                "s": self.spec.symbol,
                "S": self.side,
                "ps": "BOTH",
                "f": self.time_in_force,
                "q": fmt(self.quantity, qp),
                "X": self.status,
                "ai": self.actual_order_id,
                "ap": "0",
                "aq": "0",
                "act": "0",
                "tp": fmt(self.trigger_price, pp),
                "p": fmt(self.price, pp),
                "V": "EXPIRE_MAKER",
                "wt": self.working_type,
                "pm": "NONE",
                "cp": self.close_position,
                "pP": self.price_protect,
                "R": self.reduce_only,
                "tt": self.trigger_time,
                "gtd": 0,
                "rm": self.reject_reason,
            },
        }

    def condition_met(self, price: Decimal) -> bool:
        """True if ``price`` fires this order (trailing stops also track their extreme here)."""
        if self.order_type == "TRAILING_STOP_MARKET":
            if not self.activated:
                reached = (
                    price >= self.activate_price if self.side == "SELL" else price <= self.activate_price
                )
                if not reached:
                    return False
                self.activated, self.extreme = True, price
            self.extreme = max(self.extreme, price) if self.side == "SELL" else min(self.extreme, price)
            move = self.extreme * self.callback_rate / 100
            return price <= self.extreme - move if self.side == "SELL" else price >= self.extreme + move
        stop = self.order_type in ("STOP", "STOP_MARKET")
        above = (self.side == "BUY") == stop
        return price >= self.trigger_price if above else price <= self.trigger_price


class AlgoBook:
    """Every algo order by account, plus the id sequence."""

    def __init__(self) -> None:
        self.orders: dict[int, AlgoOrder] = {}
        self._ids = itertools.count(1_000_000_001)

    def reset(self) -> None:
        """Forget every algo order."""
        self.orders.clear()

    def next_id(self) -> int:
        """Return a fresh algoId."""
        return next(self._ids)

    def find(self, account: Account, params: Mapping[str, str]) -> AlgoOrder | None:
        """Return the account's algo order named by ``algoId`` or ``clientAlgoId`` (-1102 if neither sent)."""
        raw_id, client_id = params.get("algoId"), params.get("clientAlgoId")
        if not raw_id and not client_id:
            raise errors.mandatory("algoId")
        for order in self.orders.values():
            if order.account_key == account.key and (
                (raw_id and str(order.algo_id) == raw_id)
                or (not raw_id and order.client_algo_id == client_id)
            ):
                return order
        return None
