"""The matching engine: orders against a per-symbol reference price, fills, fees, trade ids, positions.

There is no counterparty book. The reference price stands for the market: an order that crosses it trades
at once as taker at the reference price, and a resting limit order trades as maker at its own price when
the reference price moves through it. ``liquidity`` caps the quantity one order may fill per match event
(one placement, or one price change), which is how partial fills happen. Every change is pushed to the
event sink (the user-data stream) synchronously, in order, before the REST reply is written.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from simulator import errors
from simulator.clock import ExchangeClock
from simulator.config import SimulatorConfig
from simulator.events import account_update, order_trade_update
from simulator.models import ZERO, Account, Order, Trade, closes_hedge_side
from simulator.symbols import SymbolSpec
from simulator.validation import OrderRequest

EventSink = Callable[[str, dict[str, Any]], None]
ListenerCheck = Callable[[str], bool]
PriceListener = Callable[[str, Decimal], None]
_ID_ALPHABET = string.ascii_letters + string.digits
FIRST_ORDER_ID = 4_000_000_001
FIRST_TRADE_ID = 300_000_001


def check_position_side(account: Account, req: OrderRequest) -> None:
    """Binance's position-mode rules: one-way mode takes only ``BOTH``; hedge mode needs ``LONG`` or
    ``SHORT`` (-4061 "Order's position side does not match user's setting.") and refuses ``reduceOnly``
    (-1106: closing a side is what makes a hedge-mode order reduce)."""
    if account.dual_side:
        if req.position_side == "BOTH":
            raise errors.error(errors.POSITION_SIDE_NOT_MATCH)
        if req.reduce_only:
            raise errors.not_required("reduceOnly")
    elif req.position_side != "BOTH":
        raise errors.error(errors.POSITION_SIDE_NOT_MATCH)


def _generated_client_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(22))


class MatchingEngine:
    """All accounts' orders and positions plus the reference prices; synchronous and single-threaded."""

    def __init__(
        self,
        config: SimulatorConfig,
        specs: dict[str, SymbolSpec],
        clock: ExchangeClock,
        sink: EventSink,
        listening: ListenerCheck,
    ) -> None:
        """``sink`` receives (account key, event); ``listening`` says if building events is worth it."""
        self._config = config
        self.specs = specs
        self._clock = clock
        self._sink = sink
        self._listening = listening
        self.price_listeners: list[PriceListener] = []
        self.accounts: dict[str, Account] = {}
        self.reset()

    def reset(self) -> None:
        """Forget every order, trade and position; restore balances, prices and liquidity from config."""
        self.prices: dict[str, Decimal] = {s: spec.initial_price for s, spec in self.specs.items()}
        self.liquidity: dict[str, Decimal] = {s: Decimal(q) for s, q in self._config.liquidity_qty.items()}
        self.accounts = {
            a.key: Account(key=a.key, secret=a.secret, wallet=a.balance_usdt, leverage=a.leverage)
            for a in self._config.accounts
        }
        self.orders: list[Order] = []
        self._books: dict[str, dict[int, Order]] = {s: {} for s in self.specs}
        self._next_order_id = FIRST_ORDER_ID
        self._next_trade_id = FIRST_TRADE_ID

    # ----------------------------------------------------------------- orders
    def place(self, account: Account, req: OrderRequest, dry_run: bool = False) -> Order:
        """Accept and match a validated order, returning it in its state after the first match.

        Raises -4061 (positionSide does not fit the account's position mode), -1106 (reduceOnly in hedge
        mode), -4116 (client id open), -2025 (MAX_NUM_ORDERS), -2022 (reduce-only, or closing a hedge side,
        would not reduce),
        -2019 (margin), -5022 (GTX would cross) or -5021 (FOK cannot fill in full); rejected orders leave no
        record and no event. With ``dry_run`` only the checks run (``/order/test``).
        """
        symbol = req.spec.symbol
        check_position_side(account, req)
        client_id = req.client_order_id or _generated_client_id()
        if (symbol, client_id) in account.open_by_client_id:
            raise errors.error(errors.DUPLICATED_CLIENT_ORDER_ID)
        book = self._books[symbol]
        if sum(1 for o in book.values() if o.account_key == account.key) >= self._config.max_num_orders:
            raise errors.error(errors.MAX_OPEN_ORDERS)
        ref = self.prices[symbol]
        position = account.position(symbol, req.position_side)
        reduces = req.reduce_only or closes_hedge_side(req.side, req.position_side)
        if reduces and (position.amount == 0 or (position.amount > 0) == (req.side == "BUY")):
            raise errors.error(errors.REDUCE_ONLY_REJECT)
        if not reduces:
            notional = (ref if req.type == "MARKET" else req.price) * req.quantity
            if notional / account.leverage_for(symbol) > self.available_balance(account):
                raise errors.error(errors.MARGIN_NOT_SUFFICIENT)
        crosses = req.type == "MARKET" or (req.price >= ref if req.side == "BUY" else req.price <= ref)
        available = self.liquidity.get(symbol)
        if req.time_in_force == "GTX" and crosses:
            raise errors.error(errors.GTX_REJECT)
        if req.time_in_force == "FOK" and (
            not crosses or (available is not None and available < req.quantity)
        ):
            raise errors.error(errors.FOK_REJECT)
        now = self._clock.now_ms()
        order = Order(
            order_id=self._next_order_id,
            client_order_id=client_id,
            account_key=account.key,
            spec=req.spec,
            side=req.side,
            type=req.type,
            time_in_force=req.time_in_force,
            orig_qty=req.quantity,
            price=req.price,
            reduce_only=req.reduce_only,
            position_side=req.position_side,
            stp_mode=req.stp_mode,
            price_match="NONE",
            good_till_date=req.good_till_date,
            time_ms=now,
            update_time_ms=now,
        )
        if dry_run:
            return order
        self._next_order_id += 1
        self.orders.append(order)
        account.orders[order.order_id] = order
        account.open_by_client_id[(symbol, client_id)] = order
        account.by_client_id[(symbol, client_id)] = order
        self._emit(account, order, "NEW")
        if crosses:
            self._fill(account, order, ref, maker=False)
        if order.is_open and (req.type == "MARKET" or req.time_in_force in ("IOC", "FOK")):
            self._end(account, order, "EXPIRED", expiry_reason=9 if req.type == "MARKET" else 2)
        if order.is_open:
            book[order.order_id] = order
        return order

    def find(
        self, account: Account, symbol: str, order_id: int | None, client_id: str | None
    ) -> Order | None:
        """Return the account's order in ``symbol`` by id (preferred) or client id, or None."""
        if order_id is not None:
            order = account.orders.get(order_id)
        else:
            order = account.by_client_id.get((symbol, client_id or ""))
        return order if order is not None and order.symbol == symbol else None

    def query(self, account: Account, symbol: str, order_id: int | None, client_id: str | None) -> Order:
        """Return the order for ``GET /fapi/v1/order``; -2013 "Order does not exist." if unknown."""
        order = self.find(account, symbol, order_id, client_id)
        if order is None:
            raise errors.error(errors.NO_SUCH_ORDER)
        return order

    def cancel(self, account: Account, symbol: str, order_id: int | None, client_id: str | None) -> Order:
        """Cancel an open order; -2011 "Unknown order sent." if it is unknown or no longer open."""
        order = self.find(account, symbol, order_id, client_id)
        if order is None or not order.is_open:
            raise errors.error(errors.CANCEL_REJECTED)
        self._end(account, order, "CANCELED")
        return order

    def cancel_all(self, account: Account, symbol: str) -> list[Order]:
        """Cancel every open order of the account in ``symbol``; return them."""
        mine = [o for o in self._books[symbol].values() if o.account_key == account.key]
        for order in mine:
            self._end(account, order, "CANCELED")
        return mine

    def open_orders(self, account: Account, symbol: str | None) -> list[Order]:
        """Return the account's open orders, for one symbol or all, oldest first."""
        books: Iterable[dict[int, Order]] = [self._books[symbol]] if symbol else self._books.values()
        return sorted(
            (o for b in books for o in b.values() if o.account_key == account.key), key=lambda o: o.order_id
        )

    def amend(self, account: Account, order: Order, quantity: Decimal, price: Decimal) -> Order:
        """Modify an open LIMIT order's price and quantity (x=AMENDMENT), then match it at the new price.

        Raises -2011 if the order is not open, -5027 if nothing changes, -4003-style rules are the caller's.
        """
        if not order.is_open:
            raise errors.error(errors.CANCEL_REJECTED)
        if quantity == order.orig_qty and price == order.price:
            raise errors.error(errors.AMEND_NO_CHANGE)
        if quantity <= order.executed_qty:
            raise errors.error(errors.QTY_LESS_THAN_ZERO)
        order.orig_qty, order.price = quantity, price
        order.stp_mode = "NONE"
        order.update_time_ms = self._clock.now_ms()
        self._emit(account, order, "AMENDMENT")
        self._match_resting(order)
        return order

    # ----------------------------------------------------------------- prices
    def set_price(self, symbol: str, price: Decimal) -> None:
        """Move the reference price of ``symbol`` and fill every resting order it now crosses."""
        if symbol not in self.specs:
            raise KeyError(symbol)
        self.prices[symbol] = price
        for order in list(self._books[symbol].values()):
            self._match_resting(order)
        for listener in list(self.price_listeners):
            listener(symbol, price)

    def expire_due(self, now_ms: int) -> None:
        """Expire open GTD orders whose ``goodTillDate`` has passed."""
        for book in self._books.values():
            for order in list(book.values()):
                if order.good_till_date and order.good_till_date <= now_ms:
                    self._end(self.accounts[order.account_key], order, "EXPIRED", expiry_reason=6)

    def _match_resting(self, order: Order) -> None:
        ref = self.prices[order.symbol]
        if order.is_open and (ref <= order.price if order.side == "BUY" else ref >= order.price):
            self._fill(self.accounts[order.account_key], order, order.price, maker=True)

    # ----------------------------------------------------------------- accounting
    def available_balance(self, account: Account) -> Decimal:
        """Wallet + unrealised PnL - position margin - open-order margin, in USDT."""
        value = account.wallet
        for symbol, pos in account.every_position():
            mark = self.prices[symbol]
            leverage = account.leverage_for(symbol)
            value += (mark - pos.entry_price) * pos.amount - abs(pos.amount) * mark / leverage
        for book in self._books.values():
            for o in book.values():
                if o.account_key == account.key and not o.reduces:
                    value -= o.remaining * o.price / account.leverage_for(o.symbol)
        return value

    def _fill(self, account: Account, order: Order, price: Decimal, maker: bool) -> None:
        available = self.liquidity.get(order.symbol)
        qty = order.remaining if available is None else min(order.remaining, available)
        position = account.position(order.symbol, order.position_side)
        if order.reduces:
            reducible = position.amount != 0 and (position.amount > 0) == (order.side == "SELL")
            qty = min(qty, abs(position.amount)) if reducible else ZERO
            if qty <= 0:
                # Nothing left to reduce: Binance expires the order (er=4).
                self._end(account, order, "EXPIRED", expiry_reason=4)
                return
        if qty <= 0:
            return
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
            mark = self.prices[order.symbol]
            self._sink(account.key, account_update(account, order.symbol, position, mark, now))
        if order.reduces and order.is_open and position.amount == 0:
            # The position is closed: the rest of a reduce-only order expires (er=4).
            self._end(account, order, "EXPIRED", expiry_reason=4)

    def _end(self, account: Account, order: Order, status: str, expiry_reason: int = 0) -> None:
        order.status = status
        order.expiry_reason = expiry_reason
        order.update_time_ms = self._clock.now_ms()
        self._close(account, order)
        self._emit(account, order, "EXPIRED" if status == "EXPIRED" else status)

    def _close(self, account: Account, order: Order) -> None:
        self._books[order.symbol].pop(order.order_id, None)
        account.open_by_client_id.pop((order.symbol, order.client_order_id), None)

    def _emit(self, account: Account, order: Order, execution_type: str) -> None:
        if not self._listening(account.key):
            return
        self._sink(account.key, order_trade_update(order, execution_type, self._clock.now_ms()))
