"""The simulator's records (orders, trades, positions, accounts) and their Binance JSON renderings."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from usdm_simulator.symbols import SymbolSpec

ZERO = Decimal(0)
OPEN_STATUSES = frozenset({"NEW", "PARTIALLY_FILLED"})


_QUANTS = [Decimal(1).scaleb(-places) for places in range(20)]


def fmt(value: Decimal, places: int) -> str:
    """Render ``value`` as a plain decimal string with exactly ``places`` decimals (Binance style)."""
    return format(value.quantize(_QUANTS[places]), "f")


def closes_hedge_side(side: str, position_side: str) -> bool:
    """True for a hedge-mode order that closes its side: SELL on LONG, BUY on SHORT."""
    return (position_side, side) in (("LONG", "SELL"), ("SHORT", "BUY"))


@dataclass
class Order:
    """One order the exchange accepted; mutated in place as it fills, is amended or ends."""

    order_id: int
    client_order_id: str
    account_key: str
    spec: SymbolSpec
    side: str
    type: str
    time_in_force: str
    orig_qty: Decimal
    price: Decimal
    reduce_only: bool
    position_side: str
    stp_mode: str
    price_match: str
    good_till_date: int
    time_ms: int
    update_time_ms: int
    status: str = "NEW"
    executed_qty: Decimal = ZERO
    cum_quote: Decimal = ZERO
    expiry_reason: int = 0
    queue_ahead: Decimal = ZERO  # book mode: the market's quantity ahead of it at its price

    @property
    def symbol(self) -> str:
        """The order's symbol."""
        return self.spec.symbol

    @property
    def is_open(self) -> bool:
        """True while the order rests on the book (NEW or PARTIALLY_FILLED)."""
        return self.status in OPEN_STATUSES

    @property
    def remaining(self) -> Decimal:
        """Quantity still to fill."""
        return self.orig_qty - self.executed_qty

    @property
    def reduces(self) -> bool:
        """True if the order may only shrink a position: reduce-only, or closing a hedge-mode side."""
        return self.reduce_only or closes_hedge_side(self.side, self.position_side)

    @property
    def avg_price(self) -> Decimal:
        """Volume-weighted fill price, 0 before the first fill."""
        return self.cum_quote / self.executed_qty if self.executed_qty else ZERO

    def to_json(self, with_time: bool = True) -> dict[str, Any]:
        """Render as Binance's order object (new/cancel responses omit ``time``, queries include it)."""
        pp, qp = self.spec.price_precision, self.spec.quantity_precision
        doc: dict[str, Any] = {
            "orderId": self.order_id,
            "symbol": self.symbol,
            "status": self.status,
            "clientOrderId": self.client_order_id,
            "price": fmt(self.price, pp),
            "avgPrice": fmt(self.avg_price, pp + 3) if self.executed_qty else fmt(ZERO, pp),
            "origQty": fmt(self.orig_qty, qp),
            "executedQty": fmt(self.executed_qty, qp),
            "cumQty": fmt(self.executed_qty, qp),
            "cumQuote": fmt(self.cum_quote, pp + qp),
            "timeInForce": self.time_in_force,
            "type": self.type,
            "reduceOnly": self.reduce_only,
            "closePosition": False,
            "side": self.side,
            "positionSide": self.position_side,
            "stopPrice": fmt(ZERO, pp),
            "workingType": "CONTRACT_PRICE",
            "priceProtect": False,
            "origType": self.type,
            "priceMatch": self.price_match,
            "selfTradePreventionMode": self.stp_mode,
            "goodTillDate": self.good_till_date,
            "updateTime": self.update_time_ms,
        }
        if with_time:
            doc["time"] = self.time_ms
        return doc


@dataclass
class Trade:
    """One fill of one order."""

    trade_id: int
    order: Order
    price: Decimal
    qty: Decimal
    commission: Decimal
    realized_pnl: Decimal
    maker: bool
    time_ms: int

    def to_json(self) -> dict[str, Any]:
        """Render as a ``GET /fapi/v1/userTrades`` element."""
        spec = self.order.spec
        return {
            "buyer": self.order.side == "BUY",
            "commission": fmt(self.commission, 8),
            "commissionAsset": "USDT",
            "id": self.trade_id,
            "maker": self.maker,
            "orderId": self.order.order_id,
            "price": fmt(self.price, spec.price_precision),
            "qty": fmt(self.qty, spec.quantity_precision),
            "quoteQty": fmt(self.price * self.qty, spec.price_precision + spec.quantity_precision),
            "realizedPnl": fmt(self.realized_pnl, 8),
            "side": self.order.side,
            "positionSide": self.order.position_side,
            "symbol": spec.symbol,
            "time": self.time_ms,
        }


@dataclass
class Position:
    """A position (``BOTH`` in one-way mode, ``LONG``/``SHORT`` in hedge mode): signed amount, entry
    price and realised profit so far (a SHORT position's amount is negative, as Binance reports it)."""

    amount: Decimal = ZERO
    entry_price: Decimal = ZERO
    realized: Decimal = ZERO
    update_time_ms: int = 0
    position_side: str = "BOTH"

    def apply_fill(self, side: str, qty: Decimal, price: Decimal) -> Decimal:
        """Apply a fill, returning the profit it realised (non-zero only when the position shrinks)."""
        signed = qty if side == "BUY" else -qty
        realized = ZERO
        if self.amount == 0 or (self.amount > 0) == (signed > 0):
            total = self.amount + signed
            self.entry_price = (self.entry_price * abs(self.amount) + price * qty) / abs(total)
            self.amount = total
        else:
            closed = min(abs(signed), abs(self.amount))
            direction = Decimal(1) if self.amount > 0 else Decimal(-1)
            realized = (price - self.entry_price) * closed * direction
            self.amount += signed
            if self.amount == 0:
                self.entry_price = ZERO
            elif (self.amount > 0) != (direction > 0):
                self.entry_price = price
        self.realized += realized
        return realized


@dataclass
class Account:
    """One API key's book: wallet, settings, positions per symbol, orders and trades.

    ``leverage`` is the default of every symbol, ``symbol_leverage`` what ``POST /fapi/v1/leverage`` set;
    ``dual_side`` is hedge mode, whose LONG/SHORT positions live in ``sided_positions`` (one-way
    ``BOTH`` positions in ``positions``); ``isolated`` lists the symbols in ISOLATED margin.
    """

    key: str
    secret: str
    wallet: Decimal
    leverage: int
    positions: dict[str, Position] = field(default_factory=dict)
    sided_positions: dict[tuple[str, str], Position] = field(default_factory=dict)
    symbol_leverage: dict[str, int] = field(default_factory=dict)
    isolated: set[str] = field(default_factory=set)
    dual_side: bool = False
    orders: dict[int, Order] = field(default_factory=dict)
    open_by_client_id: dict[tuple[str, str], Order] = field(default_factory=dict)
    by_client_id: dict[tuple[str, str], Order] = field(default_factory=dict)
    trades: list[Trade] = field(default_factory=list)

    def position(self, symbol: str, position_side: str = "BOTH") -> Position:
        """Return (creating if needed) the ``position_side`` position in ``symbol``."""
        if position_side != "BOTH":
            sided = self.sided_positions.get((symbol, position_side))
            if sided is None:
                sided = self.sided_positions[(symbol, position_side)] = Position(position_side=position_side)
            return sided
        pos = self.positions.get(symbol)
        if pos is None:
            pos = self.positions[symbol] = Position()
        return pos

    def every_position(self) -> list[tuple[str, Position]]:
        """Every (symbol, position) the account holds, one-way and hedge-mode ones alike."""
        return [*self.positions.items(), *((s, p) for (s, _), p in self.sided_positions.items())]

    def leverage_for(self, symbol: str) -> int:
        """The leverage ``symbol`` trades at: the one set for it, else the account's default."""
        return self.symbol_leverage.get(symbol, self.leverage)
