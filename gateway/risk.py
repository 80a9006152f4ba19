"""Pre-trade risk at the gateway: the limits in force, mark prices, and the checks that need no count.

Each exchange account has its own limits (the settings' `risk` section is every account's
default, overlaid with what AdminService stored in Redis for that account;
`orders.risk_state`) and its own kill switch, under the switch for every account. Every
replica reloads every account's limits and switch, the switch for every account and the mark
prices (the venue's, shared by every account) every `refresh_s` (0.25 s), and the replica that
changes a limit or a switch uses it at once. Checks here need only the order, its account's
limits and a mark price:
* max order notional, MARKET orders priced at the mark price (refused when the mark
  price is older than `risk.mark_price_max_age_ms`: an unpriced MARKET order is not
  passed), and so is a trailing stop without an activation price;
* the price band around the mark price (fat finger), LIMIT orders;
* the exchange's PERCENT_PRICE filter (BUY price <= mark x multiplierUp, SELL price >=
  mark x multiplierDown), LIMIT orders, when a fresh mark price is known (otherwise the
  exchange still applies it).
The counting limits (open orders, orders per day, position with open orders) and the
trading mode (the stricter of the account's switch and every account's) are checked in the
order store's create step (`RiskCheck`), atomically across replicas, whatever this cache holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from decimal import Decimal, localcontext
from typing import Any

from order_execution.orders import metrics
from order_execution.orders.errors import InvalidOrder, RiskLimitExceeded
from order_execution.orders.exact import EXACT_DIGITS, exactly, product
from order_execution.orders.model import Order, OrderType, Side, decimal_str, now_ms
from order_execution.orders.risk_state import (
    MODE_VALUES,
    MarkPrice,
    ModeStatus,
    RiskCheck,
    RiskState,
    Switches,
    TradingMode,
)
from order_execution.orders.rules import SymbolRules
from order_execution.orders.trading_switch import TradingSwitch
from order_execution.runtime.settings import RiskSettings

log = logging.getLogger(__name__)

_HUNDRED = Decimal(100)


class RiskGate:
    """Every account's risk limits and kill switch, and the mark prices, cached; see the module docstring.

    `state` is any account's risk state (its connection and namespace are used); `accounts`
    are the accounts served here, the first being the one a request naming none is for
    (default: `state`'s account alone).
    """

    def __init__(
        self,
        state: RiskState,
        defaults: RiskSettings,
        *,
        accounts: Sequence[str] = (),
        refresh_s: float = 0.25,
    ) -> None:
        self.accounts: tuple[str, ...] = tuple(accounts) or (state.account,)
        self.states = {account: state.for_account(account) for account in self.accounts}
        self.state = self.states[self.accounts[0]]
        self.defaults = defaults
        self._limits = dict.fromkeys(self.accounts, defaults)
        self.switches = Switches(
            ModeStatus(TradingMode.ACTIVE, account=None),
            {account: ModeStatus(TradingMode.ACTIVE, account=account) for account in self.accounts},
        )
        self._marks: dict[str, MarkPrice] = {}
        self._refresh_s = refresh_s
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def state_for(self, account: str) -> RiskState:
        """`account`'s risk state; raises InvalidOrder naming `account` if it is not served here."""
        state = self.states.get(account)
        if state is None:
            raise InvalidOrder(
                "account", f"{account[:40]!r} is not a configured account ({', '.join(self.accounts)})"
            )
        return state

    def limits_for(self, account: str) -> RiskSettings:
        """`account`'s limits in force; raises InvalidOrder naming an unknown `account`."""
        return self._limits[self.state_for(account).account]

    def mode_for(self, account: str) -> ModeStatus:
        """The switch `account` trades under (the stricter of its own and every account's), as
        last read; raises InvalidOrder naming an unknown `account`."""
        return self.switches.effective(self.state_for(account).account)

    def switch(self, account: str | None) -> TradingSwitch:
        """`account`'s own kill switch, or the switch for every account (None); raises
        InvalidOrder naming an unknown `account`."""
        return self.state.every_account if account is None else self.state_for(account).switch

    async def load(self) -> None:
        """Reload every account's limits and switch, every account's switch and the mark prices."""
        self._limits = await self.state.limits_of(self.accounts, self.defaults)
        self._marks = await self.state.marks()
        self.switches = await self.state.switches(self.accounts)
        self._publish_mode()

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

    async def set_limits(
        self, changes: dict[str, Any], *, actor: str, reason: str, account: str
    ) -> RiskSettings:
        """Store `account`'s changed limits for every replica and use them here at once; raises
        ValueError for a bad change, InvalidOrder for an unknown account."""
        limits = await self.state_for(account).set_limits(self.defaults, changes, actor=actor, reason=reason)
        self._limits[account] = limits
        return limits

    async def set_mode(
        self,
        mode: TradingMode,
        *,
        actor: str,
        reason: str,
        account: str | None,
        cancel_open: bool = False,
    ) -> ModeStatus:
        """Set `account`'s kill switch, or the switch for every account (None), for every replica
        (the store's create step reads it at once); `cancel_open` records a pending cancel of
        the open orders it covers with it (`TradingSwitch.set_mode`). Raises InvalidOrder
        naming an unknown `account`."""
        status = await self.switch(account).set_mode(
            mode, actor=actor, reason=reason, cancel_open=cancel_open
        )
        if account is None:
            self.switches = Switches(status, self.switches.accounts)
        else:
            self.switches = Switches(self.switches.every_account, {**self.switches.accounts, account: status})
        self._publish_mode()
        return status

    def _publish_mode(self) -> None:
        """The gauge shows the strictest mode any account trades under."""
        strictest = max(MODE_VALUES[self.switches.effective(a).mode] for a in self.accounts)
        metrics.TRADING_MODE.set(strictest)

    async def check(self, order: Order, rules: SymbolRules) -> RiskCheck:
        """Apply the checks that need no count against the limits of the order's account; return
        what the store's create step must count.

        Raises RiskLimitExceeded naming the limit, the value and the allowance; InvalidOrder
        naming `account` for an account not served here.
        """
        limits = self.limits_for(order.account)
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
