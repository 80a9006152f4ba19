"""Book mode's matching (``SimulatorConfig.matching`` ``book``): our orders against an order book.

Each symbol's book is the outside market's levels around the reference price (``usdm_simulator.liquidity``)
plus our accounts' resting orders. A taker walks it best price first (``usdm_simulator.crossing``), trading
at each level's price; its self-trade prevention mode applies when it meets its own account's order. A
resting order queues behind the market's quantity shown at its price when it came to rest, and trades as
the market's trades reach it. Accepting, amending and cancelling orders, and the reference mode, are the
``usdm_simulator.matching`` engine's; fills and endings the ``usdm_simulator.ledger``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal

from usdm_simulator.book import BookSide, Level
from usdm_simulator.crossing import Maker, makers
from usdm_simulator.ledger import Ledger
from usdm_simulator.liquidity import MarketLiquidity
from usdm_simulator.models import ZERO, Account, Order

# (symbol, [(price, qty), ...] in the order traded, taker bought): our orders' trades, for the public tape.
TradeListener = Callable[[str, list[Level], bool], None]


class BookMatching:
    """Book mode over the engine's state, shared: ``books`` (resting orders by symbol and id), reference
    ``prices``, ``accounts`` by key."""

    def __init__(
        self,
        market: MarketLiquidity,
        ledger: Ledger,
        accounts: dict[str, Account],
        prices: dict[str, Decimal],
        books: dict[str, dict[int, Order]],
        cap: Callable[[Order], Decimal],
        trade_listeners: list[TradeListener],
    ) -> None:
        """``cap`` gives the most an order may fill in one match event; ``trade_listeners`` hear the
        trades a taker makes."""
        self._market = market
        self._ledger = ledger
        self._accounts = accounts
        self._prices = prices
        self._books = books
        self._cap = cap
        self._trade_listeners = trade_listeners

    def makers(self, symbol: str, taker_side: str, limit: Decimal | None) -> Iterator[Maker]:
        """The makers a ``taker_side`` order limited to ``limit`` meets, in order (``crossing.makers``)."""
        market = self._market.walk(symbol, self._prices[symbol], "asks" if taker_side == "BUY" else "bids")
        resting = [o for o in self._books[symbol].values() if o.side != taker_side]
        return makers(taker_side, market, resting, limit)

    def take(self, account: Account, order: Order) -> None:
        """Walk the book for ``order`` as taker until it is filled, ends, or meets its limit price."""
        symbol = order.symbol
        opposite: BookSide = "asks" if order.side == "BUY" else "bids"
        limit = None if order.type == "MARKET" else order.price
        budget = self._cap(order)
        traded: list[Level] = []
        for maker in self.makers(symbol, order.side, limit):
            if not order.is_open or budget <= 0:
                break
            resting = maker.order
            if resting is None:
                qty = self._ledger.fill(account, order, maker.price, min(maker.qty, budget), maker=False)
                self._market.take(symbol, opposite, maker.price, qty)
            elif (
                resting.account_key == account.key
                and order.stp_mode != "NONE"
                and order.time_in_force not in ("FOK", "GTX")
            ):
                self._prevent_self_trade(account, order, resting)
                continue
            else:
                owner = self._accounts[resting.account_key]
                qty = self._ledger.reducible(owner, resting, min(maker.qty, budget))
                if qty <= 0:
                    # A reduce-only maker with nothing left to reduce expires (er=4) instead of trading.
                    self._ledger.end(owner, resting, "EXPIRED", expiry_reason=4)
                    continue
                qty = self._ledger.fill(account, order, maker.price, qty, maker=False)
                if qty > 0:
                    self._ledger.fill(owner, resting, maker.price, qty, maker=True)
            budget -= qty
            if qty > 0:
                traded.append((maker.price, qty))
        if traded:
            for listener in list(self._trade_listeners):
                listener(symbol, traded, order.side == "BUY")

    def _prevent_self_trade(self, account: Account, taker: Order, maker: Order) -> None:
        """The taker's STP mode decides which of the two expires (``EXPIRED_IN_MATCH``, er=1; er=3 for
        an IOC taker)."""
        mode = taker.stp_mode
        if mode in ("EXPIRE_MAKER", "EXPIRE_BOTH"):
            self._ledger.end(account, maker, "EXPIRED_IN_MATCH", expiry_reason=1)
        if mode in ("EXPIRE_TAKER", "EXPIRE_BOTH"):
            self._ledger.end(
                account, taker, "EXPIRED_IN_MATCH", expiry_reason=3 if taker.time_in_force == "IOC" else 1
            )

    def queue_ahead(self, order: Order) -> Decimal:
        """The market's quantity shown at ``order``'s price, on its side, when it came to rest (its update
        time): what trades before it at that price."""
        side: BookSide = "bids" if order.side == "BUY" else "asks"
        return self._market.level_qty(
            order.symbol, self._prices[order.symbol], side, order.price, order.update_time_ms
        )

    def on_market_trade(self, symbol: str, price: Decimal, qty: Decimal, taker_sold: bool) -> None:
        """Fill resting orders that the outside market's trade of ``qty`` at ``price`` reaches.

        A taker sale reaches resting BUYs at ``price`` or above, a taker purchase resting SELLs at ``price``
        or below, best price first, oldest first. One beyond ``price`` was swept with its level and fills
        in full; one at ``price`` fills from what is left of the trade after the quantity queued ahead of it.
        """
        side = "BUY" if taker_sold else "SELL"
        reached = [
            o
            for o in self._books[symbol].values()
            if o.side == side and (o.price >= price if side == "BUY" else o.price <= price)
        ]
        reached.sort(key=lambda o: (-o.price if side == "BUY" else o.price, o.order_id))
        left = qty
        for order in reached:
            if order.price == price:
                ahead = min(order.queue_ahead, left)
                order.queue_ahead -= ahead
                left -= ahead
                wanted = min(order.remaining, left)
                left -= wanted
            else:
                wanted = order.remaining
            if wanted > 0:
                self._ledger.fill(
                    self._accounts[order.account_key],
                    order,
                    order.price,
                    min(wanted, self._cap(order)),
                    maker=True,
                )

    def levels(self, symbol: str, now_ms: int) -> tuple[list[Level], list[Level]]:
        """The book clients see at ``now_ms`` (bids, asks; best first): the market's levels less what our
        orders took, plus our resting orders."""
        ref = self._prices[symbol]
        sides: dict[str, dict[Decimal, Decimal]] = {
            "bids": dict(self._market.levels(symbol, ref, "bids", now_ms)),
            "asks": dict(self._market.levels(symbol, ref, "asks", now_ms)),
        }
        for order in self._books[symbol].values():
            levels = sides["bids" if order.side == "BUY" else "asks"]
            levels[order.price] = levels.get(order.price, ZERO) + order.remaining
        bids = sorted(((p, q) for p, q in sides["bids"].items() if q > 0), reverse=True)
        asks = sorted((p, q) for p, q in sides["asks"].items() if q > 0)
        return bids, asks
