"""The matching engine: accepts orders, matches them against the market, keeps the books and prices.

Fills, fees, trade ids, positions and the events they push are the ``usdm_simulator.ledger``'s; book
mode's taker walk, queue positions and the market's trades reaching resting orders are
``usdm_simulator.book_matching``'s.

Two models, chosen by ``SimulatorConfig.matching``:

* ``book`` (default): each symbol has an order book, the outside market's levels around the reference
  price (``usdm_simulator.liquidity``) plus our accounts' resting orders. A MARKET or crossing LIMIT order
  walks it best price first (``usdm_simulator.crossing``), trading at each level's price, so a large order
  fills at several prices; the taker's self-trade prevention mode applies when it meets its own account's
  order. A resting order trades as the market's trades reach it: a trade at its price fills it after the
  quantity queued ahead of it, up to the trade's size (partial fills); a trade beyond its price has swept
  its level and fills it in full.
* ``reference``: no book. An order that crosses the reference price trades at once as taker at the
  reference price; a resting order trades as maker at its own price when the reference price moves
  through it.

In both, ``liquidity`` caps the quantity one order may fill per match event (one placement, or one price
change). Every change is pushed to the event sink (the user-data stream) synchronously, in order, before
the REST reply is written.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable, Iterable
from decimal import Decimal

from usdm_simulator import errors
from usdm_simulator.book import Level, book_levels
from usdm_simulator.book_matching import BookMatching, TradeListener
from usdm_simulator.clock import ExchangeClock
from usdm_simulator.config import SimulatorConfig
from usdm_simulator.crossing import fillable_qty
from usdm_simulator.ledger import EventSink, Ledger, ListenerCheck
from usdm_simulator.liquidity import MarketLiquidity
from usdm_simulator.models import ZERO, Account, Order, closes_hedge_side
from usdm_simulator.symbols import SymbolSpec
from usdm_simulator.validation import OrderRequest

PriceListener = Callable[[str, Decimal], None]
_ID_ALPHABET = string.ascii_letters + string.digits
FIRST_ORDER_ID = 4_000_000_001


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
        self._by_book = config.matching == "book"
        self._market = MarketLiquidity(specs, config.seed, clock)
        self.price_listeners: list[PriceListener] = []
        self.trade_listeners: list[TradeListener] = []
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
        self._ledger = Ledger(
            self._config, self._clock, self._sink, self._listening, self.prices, self._books
        )
        self._book = BookMatching(
            self._market,
            self._ledger,
            self.accounts,
            self.prices,
            self._books,
            self._cap,
            self.trade_listeners,
        )
        self._market.reset()
        self._next_order_id = FIRST_ORDER_ID

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
            if notional / account.leverage_for(symbol) > self._ledger.available_balance(account):
                raise errors.error(errors.MARGIN_NOT_SUFFICIENT)
        crosses = self._crosses(req)
        if req.time_in_force == "GTX" and crosses:
            raise errors.error(errors.GTX_REJECT)
        if req.time_in_force == "FOK" and self._fillable(req, crosses) < req.quantity:
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
        self._ledger.emit(account, order, "NEW")
        if crosses and self._by_book:
            self._book.take(account, order)
        elif crosses:
            self._ledger.fill(account, order, ref, self._cap(order), maker=False)
        if order.is_open and (req.type == "MARKET" or req.time_in_force in ("IOC", "FOK")):
            self._ledger.end(account, order, "EXPIRED", expiry_reason=9 if req.type == "MARKET" else 2)
        if order.is_open:
            self._rest(order)
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
        self._ledger.end(account, order, "CANCELED")
        return order

    def cancel_all(self, account: Account, symbol: str) -> list[Order]:
        """Cancel every open order of the account in ``symbol``; return them."""
        mine = [o for o in self._books[symbol].values() if o.account_key == account.key]
        for order in mine:
            self._ledger.end(account, order, "CANCELED")
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
        self._ledger.emit(account, order, "AMENDMENT")
        if self._by_book:
            # Amended, the order loses its place: it takes what it now crosses, then queues afresh.
            self._books[order.symbol].pop(order.order_id, None)
            self._book.take(account, order)
            if order.is_open:
                self._rest(order)
        else:
            self._match_resting(order)
        return order

    # ----------------------------------------------------------------- prices
    def set_price(self, symbol: str, price: Decimal) -> None:
        """Move the reference price of ``symbol`` and fill every resting order it now crosses."""
        if symbol not in self.specs:
            raise KeyError(symbol)
        self.prices[symbol] = price
        if not self._by_book:
            for order in list(self._books[symbol].values()):
                self._match_resting(order)
        # In book mode the market's trades for this move reach resting orders through on_market_trade.
        for listener in list(self.price_listeners):
            listener(symbol, price)

    def expire_due(self, now_ms: int) -> None:
        """Expire open GTD orders whose ``goodTillDate`` has passed."""
        for book in self._books.values():
            for order in list(book.values()):
                if order.good_till_date and order.good_till_date <= now_ms:
                    self._ledger.end(self.accounts[order.account_key], order, "EXPIRED", expiry_reason=6)

    def on_market_trade(self, symbol: str, price: Decimal, qty: Decimal, taker_sold: bool) -> None:
        """Book mode: fill resting orders that the outside market's trade of ``qty`` at ``price`` reaches
        (``BookMatching.on_market_trade``)."""
        self._book.on_market_trade(symbol, price, qty, taker_sold)

    def book_levels(self, symbol: str, now_ms: int) -> tuple[list[Level], list[Level]]:
        """The book clients see at ``now_ms`` (bids, asks; best first): in book mode the market's levels
        less what our orders took, plus our resting orders; in reference mode the synthetic book alone."""
        if not self._by_book:
            return book_levels(self.specs[symbol], self._config.seed, self.prices[symbol], now_ms)
        return self._book.levels(symbol, now_ms)

    def _match_resting(self, order: Order) -> None:
        ref = self.prices[order.symbol]
        if order.is_open and (ref <= order.price if order.side == "BUY" else ref >= order.price):
            self._ledger.fill(
                self.accounts[order.account_key], order, order.price, self._cap(order), maker=True
            )

    def _crosses(self, req: OrderRequest) -> bool:
        """Whether ``req`` would trade at once: MARKET always; LIMIT if its price reaches the best maker
        (book mode) or the reference price."""
        if req.type == "MARKET":
            return True
        if self._by_book:
            return next(self._book.makers(req.spec.symbol, req.side, req.price), None) is not None
        ref = self.prices[req.spec.symbol]
        return req.price >= ref if req.side == "BUY" else req.price <= ref

    def _fillable(self, req: OrderRequest, crosses: bool) -> Decimal:
        """How much of ``req`` one match could fill at once (the FOK test)."""
        limit = None if req.type == "MARKET" else req.price
        if not crosses:
            return ZERO
        cap = self.liquidity.get(req.spec.symbol)
        wanted = req.quantity if cap is None else min(req.quantity, cap)
        if not self._by_book:
            return wanted
        return fillable_qty(self._book.makers(req.spec.symbol, req.side, limit), wanted)

    def _rest(self, order: Order) -> None:
        """Put an open order on the book, in book mode behind the market's quantity shown at its price when
        it came to rest (``BookMatching.queue_ahead``)."""
        if self._by_book:
            order.queue_ahead = self._book.queue_ahead(order)
        self._books[order.symbol][order.order_id] = order

    def _cap(self, order: Order) -> Decimal:
        """The most ``order`` may fill in one match event: ``liquidity`` if set, else all of it."""
        cap = self.liquidity.get(order.symbol)
        return order.remaining if cap is None else min(order.remaining, cap)

    def available_balance(self, account: Account) -> Decimal:
        """Wallet + unrealised PnL - position margin - open-order margin, in USDT (``Ledger``)."""
        return self._ledger.available_balance(account)
