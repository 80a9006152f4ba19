"""What happens to accepted orders: fills (position, wallet, fee, trade), endings, and their events.

The ``Ledger`` is the matching engine's bookkeeper. It applies one fill or one ending at a time, keeps
the trade ids, takes ended orders off the book, and pushes each change to the event sink (the user-data
stream) as it happens, so events come out in the order the changes were made.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from usdm_simulator.clock import ExchangeClock
from usdm_simulator.config import SimulatorConfig
from usdm_simulator.events import account_update, order_trade_update
from usdm_simulator.models import ZERO, Account, Order, Trade

EventSink = Callable[[str, dict[str, Any]], None]
ListenerCheck = Callable[[str], bool]
FIRST_TRADE_ID = 300_000_001


class Ledger:
    """Fills and endings of the orders on ``books``, valued at ``prices`` (both the engine's, shared)."""

    def __init__(
        self,
        config: SimulatorConfig,
        clock: ExchangeClock,
        sink: EventSink,
        listening: ListenerCheck,
        prices: dict[str, Decimal],
        books: dict[str, dict[int, Order]],
    ) -> None:
        """``sink`` receives (account key, event); ``listening`` says if building events is worth it."""
        self._config = config
        self._clock = clock
        self._sink = sink
        self._listening = listening
        self._prices = prices
        self._books = books
        self._next_trade_id = FIRST_TRADE_ID

    def available_balance(self, account: Account) -> Decimal:
        """Wallet + unrealised PnL - position margin - open-order margin, in USDT."""
        value = account.wallet
        for symbol, pos in account.every_position():
            mark = self._prices[symbol]
            leverage = account.leverage_for(symbol)
            value += (mark - pos.entry_price) * pos.amount - abs(pos.amount) * mark / leverage
        for book in self._books.values():
            for o in book.values():
                if o.account_key == account.key and not o.reduces:
                    value -= o.remaining * o.price / account.leverage_for(o.symbol)
        return value

    @staticmethod
    def reducible(account: Account, order: Order, qty: Decimal) -> Decimal:
        """``qty``, or less for an order that may only reduce a position: at most what it can reduce."""
        if not order.reduces:
            return qty
        position = account.position(order.symbol, order.position_side)
        can_reduce = position.amount != 0 and (position.amount > 0) == (order.side == "SELL")
        return min(qty, abs(position.amount)) if can_reduce else ZERO

    def fill(self, account: Account, order: Order, price: Decimal, qty: Decimal, maker: bool) -> Decimal:
        """Fill up to ``qty`` of ``order`` at ``price``; return what was filled.

        A reduce-only order fills at most what reduces its position, and expires (er=4) when there is
        nothing left to reduce.
        """
        position = account.position(order.symbol, order.position_side)
        qty = self.reducible(account, order, min(qty, order.remaining))
        if qty <= 0:
            if order.reduces:
                # Nothing left to reduce: Binance expires the order (er=4).
                self.end(account, order, "EXPIRED", expiry_reason=4)
            return ZERO
        rate = self._config.maker_fee_rate if maker else self._config.taker_fee_rate
        commission = price * qty * rate
        realized = position.apply_fill(order.side, qty, price)
        account.wallet += realized - commission
        now = self._clock.now_ms()
        position.update_time_ms = now
        order.executed_qty += qty
        order.cum_quote += price * qty
        order.status = "FILLED" if order.remaining == 0 else "PARTIALLY_FILLED"
        order.update_time_ms = now
        trade = Trade(self._next_trade_id, order, price, qty, commission, realized, maker, now)
        self._next_trade_id += 1
        account.trades.append(trade)
        if order.status == "FILLED":
            self._close(account, order)
        if self._listening(account.key):
            self._sink(account.key, order_trade_update(order, "TRADE", now, trade))
            self._sink(account.key, account_update(account, order.symbol, position, self._prices, now))
        if order.reduces and order.is_open and position.amount == 0:
            # The position is closed: the rest of a reduce-only order expires (er=4).
            self.end(account, order, "EXPIRED", expiry_reason=4)
        return qty

    def end(self, account: Account, order: Order, status: str, expiry_reason: int = 0) -> None:
        """End ``order`` in ``status`` (CANCELED, EXPIRED, EXPIRED_IN_MATCH): off the book, event out."""
        order.status = status
        order.expiry_reason = expiry_reason
        order.update_time_ms = self._clock.now_ms()
        self._close(account, order)
        # EXPIRED_IN_MATCH is reported as x=EXPIRED, X=EXPIRED_IN_MATCH.
        self.emit(account, order, "EXPIRED" if status.startswith("EXPIRED") else status)

    def emit(self, account: Account, order: Order, execution_type: str) -> None:
        """Push an ``ORDER_TRADE_UPDATE`` of ``execution_type`` for ``order`` (if anyone listens)."""
        if not self._listening(account.key):
            return
        self._sink(account.key, order_trade_update(order, execution_type, self._clock.now_ms()))

    def _close(self, account: Account, order: Order) -> None:
        self._books[order.symbol].pop(order.order_id, None)
        account.open_by_client_id.pop((order.symbol, order.client_order_id), None)
