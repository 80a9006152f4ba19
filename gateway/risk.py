"""Pre-trade risk at the gateway: the limits in force, mark prices, and the checks that need no count.

The limits are the settings' `risk` section overlaid with what AdminService stored in
Redis (`orders.risk_state`); every replica reloads them, the mark prices and the
trading mode every `refresh_s` (0.25 s), and the replica that changes a limit uses it
at once. Checks here need only the order and a mark price:
* max order notional, MARKET orders priced at the mark price (refused when the mark
  price is older than `risk.mark_price_max_age_ms`: an unpriced MARKET order is not
  passed), and so is a trailing stop without an activation price;
* the price band around the mark price (fat finger), LIMIT orders;
* the exchange's PERCENT_PRICE filter (BUY price <= mark x multiplierUp, SELL price >=
  mark x multiplierDown), LIMIT orders, when a fresh mark price is known (otherwise the
  exchange still applies it).
The counting limits (open orders, orders per day, position with open orders) and the
trading mode are checked in the order store's create step (`RiskCheck`), atomically
across replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from decimal import Decimal, localcontext
from typing import Any

from order_execution.orders import metrics
from order_execution.orders.errors import RiskLimitExceeded
from order_execution.orders.exact import EXACT_DIGITS, exactly, product
from order_execution.orders.model import Order, OrderType, Side, decimal_str, now_ms
from order_execution.orders.risk_state import (
    MODE_VALUES,
    MarkPrice,
    ModeStatus,
    RiskCheck,
    RiskState,
    TradingMode,
)
from order_execution.orders.rules import SymbolRules
from order_execution.runtime.settings import RiskSettings

log = logging.getLogger(__name__)

_HUNDRED = Decimal(100)


class RiskGate:
    """The gateway's risk limits and mark prices, cached; see the module docstring."""

    def __init__(self, state: RiskState, defaults: RiskSettings, *, refresh_s: float = 0.25) -> None:
        self.state = state
        self.defaults = defaults
        self.limits = defaults
        self.mode = ModeStatus(TradingMode.ACTIVE)
        self._marks: dict[str, MarkPrice] = {}
        self._refresh_s = refresh_s
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def load(self) -> None:
        """Reload limits, mark prices and trading mode from Redis."""
        self.limits = await self.state.limits(self.defaults)
        self._marks = await self.state.marks()
        self.mode = await self.state.mode()
        metrics.TRADING_MODE.set(MODE_VALUES[self.mode.mode])

    def start(self) -> None:
        """Reload every `refresh_s` in the background until `stop`."""
        self._stopping = False
        self._task = asyncio.create_task(self._refresh_forever())

    async def stop(self) -> None:
        if self._task is not None:
            # redis-py can swallow a cancel that lands in a command; the loop then ends at its
            # next turn on the flag.
            self._stopping = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def set_limits(self, changes: dict[str, Any], *, actor: str, reason: str) -> RiskSettings:
        """Store changed limits for every replica and use them here at once; raises ValueError."""
        self.limits = await self.state.set_limits(self.defaults, changes, actor=actor, reason=reason)
        return self.limits

    async def set_mode(
        self, mode: TradingMode, *, actor: str, reason: str, cancel_open: bool = False
    ) -> ModeStatus:
        """Set the kill switch for every replica (the store's create step reads it at once);
        `cancel_open` records a pending cancel of every open order with it (`RiskState.set_mode`)."""
        self.mode = await self.state.set_mode(mode, actor=actor, reason=reason, cancel_open=cancel_open)
        metrics.TRADING_MODE.set(MODE_VALUES[mode])
        return self.mode

    async def check(self, order: Order, rules: SymbolRules) -> RiskCheck:
        """Apply the checks that need no count; return what the store's create step must count.

        Raises RiskLimitExceeded naming the limit, the value and the allowance.
        """
        limits = self.limits
        if order.type is OrderType.LIMIT:
            if order.price is not None:  # its notional is checked with the request (validation)
                await self._check_limit_price(order, order.price, rules, limits)
        else:
            await self._check_notional(order, limits)
        position = limits.max_position_quantity.get(order.symbol)
        return RiskCheck(
            max_open_orders=limits.max_open_orders,
            max_orders_per_day=limits.max_orders_per_day,
            max_position=position,
        )

    async def _check_notional(self, order: Order, limits: RiskSettings) -> None:
        """Orders without a price of their own at the mark price: MARKET, and a trailing stop
        without an activation price (the others' notional is checked with the request)."""
        if order.type is not OrderType.MARKET and (
            order.price or order.trigger_price or order.activation_price
        ):
            return
        mark = await self._fresh_mark(order.symbol, limits)
        if mark is None:
            raise _refused(
                "mark_price",
                "quantity",
                f"no mark price of {order.symbol} younger than {limits.mark_price_max_age_ms} ms "
                f"to price this {order.type} order against risk.max_order_notional; the listener "
                "polls premiumIndex (is it running?)",
            )
        notional = product("quantity", order.quantity, mark.price)
        if notional > limits.max_order_notional:
            raise _refused(
                "max_order_notional",
                "quantity",
                f"quantity x mark price {decimal_str(mark.price)} = {decimal_str(notional)} exceeds "
                f"the allowance {decimal_str(limits.max_order_notional)} (risk.max_order_notional)",
            )

    async def _check_limit_price(
        self, order: Order, price: Decimal, rules: SymbolRules, limits: RiskSettings
    ) -> None:
        band = limits.price_band_percent
        percent_filter = bool(rules.percent_price_up or rules.percent_price_down)
        if not band and not percent_filter:
            return
        mark = await self._fresh_mark(order.symbol, limits)
        if mark is None:
            if band:
                raise _refused(
                    "mark_price",
                    "price",
                    f"no mark price of {order.symbol} younger than {limits.mark_price_max_age_ms} ms "
                    "to check risk.price_band_percent against; the listener polls premiumIndex",
                )
            return  # PERCENT_PRICE: the exchange still applies it
        if band and _outside_band(price, mark.price, band):
            off = _percent_off(price, mark.price)
            raise _refused(
                "price_band_percent",
                "price",
                f"{decimal_str(price)} is {decimal_str(off)}% from the mark "
                f"price {decimal_str(mark.price)}, outside the allowance {decimal_str(band)}% "
                "(risk.price_band_percent)",
            )
        if order.side is Side.BUY and rules.percent_price_up:
            cap = product("price", mark.price, rules.percent_price_up)
            if price > cap:
                raise _refused(
                    "percent_price",
                    "price",
                    f"BUY at {decimal_str(price)} is above mark {decimal_str(mark.price)} x multiplierUp "
                    f"{decimal_str(rules.percent_price_up)} = {decimal_str(cap)} (exchange PERCENT_PRICE)",
                )
        if order.side is Side.SELL and rules.percent_price_down:
            floor = product("price", mark.price, rules.percent_price_down)
            if price < floor:
                raise _refused(
                    "percent_price",
                    "price",
                    f"SELL at {decimal_str(price)} is below mark {decimal_str(mark.price)} x "
                    f"multiplierDown {decimal_str(rules.percent_price_down)} = {decimal_str(floor)} "
                    "(exchange PERCENT_PRICE)",
                )

    async def _fresh_mark(self, symbol: str, limits: RiskSettings) -> MarkPrice | None:
        """The symbol's mark price if younger than the limit; a missing or old one is re-read once."""
        oldest = now_ms() - limits.mark_price_max_age_ms
        mark = self._marks.get(symbol)
        if mark is None or mark.time_ms < oldest:
            mark = await self.state.mark(symbol)
            if mark is not None:
                self._marks[symbol] = mark
        if mark is None or mark.time_ms < oldest:
            return None
        return mark

    async def _refresh_forever(self) -> None:
        while not self._stopping:
            started = time.monotonic()
            try:
                await self.load()
            except Exception as exc:
                log.warning("loading risk limits and mark prices failed (%r); keeping the previous ones", exc)
            await asyncio.sleep(max(self._refresh_s - (time.monotonic() - started), 0.01))


def _outside_band(price: Decimal, mark: Decimal, band_percent: Decimal) -> bool:
    """Whether `price` is more than `band_percent`% away from `mark` (> 0), compared exactly:
    |price - mark| x 100 > band x mark, with no division to round."""
    with exactly("price"):
        return abs(price - mark) * _HUNDRED > band_percent * mark


def _percent_off(price: Decimal, mark: Decimal) -> Decimal:
    """How far `price` is from `mark` (> 0) in percent, to two places: for the message only, so
    rounded on purpose (the decision is `_outside_band`'s, exact)."""
    with localcontext(prec=EXACT_DIGITS):
        return (abs(price - mark) * _HUNDRED / mark).quantize(Decimal("0.01"))


def _refused(limit: str, field: str, rule: str) -> RiskLimitExceeded:
    return RiskLimitExceeded(field, rule, limit=limit)
