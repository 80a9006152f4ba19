"""Exchange trading rules for one symbol, and the checks an order must pass.

Parsed from Binance USD-M `exchangeInfo`. All arithmetic is Decimal, and exact
(`orders.exact`): an on-tick price such as 45000.0 with tick 0.10 is a multiple, unlike with
float modulo, and 50000.0000000000000000000000000000000001 is not, unlike in Python's
default 28-digit context.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from order_execution.orders.errors import InvalidOrder
from order_execution.orders.exact import is_multiple, product
from order_execution.orders.model import OrderType, decimal_str


@dataclass(frozen=True, slots=True)
class SymbolRules:
    """PRICE_FILTER, LOT_SIZE, MARKET_LOT_SIZE, MIN_NOTIONAL and PERCENT_PRICE of one symbol.

    PERCENT_PRICE is against the mark price, which changes every second: the gateway's
    risk checks apply it (`percent_price_up`/`_down` 0 = the filter is not listed).
    """

    symbol: str
    status: str
    tick_size: Decimal
    min_price: Decimal
    max_price: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    market_step_size: Decimal
    market_min_qty: Decimal
    market_max_qty: Decimal
    min_notional: Decimal
    percent_price_up: Decimal = Decimal(0)  # PERCENT_PRICE multiplierUp: BUY price <= mark x up
    percent_price_down: Decimal = Decimal(0)  # multiplierDown: SELL price >= mark x down

    @classmethod
    def from_exchange_info(cls, entry: dict[str, Any]) -> SymbolRules:
        """Build from one element of exchangeInfo's `symbols` array.

        Raises KeyError or InvalidOperation if a filter is missing or malformed.
        """
        filters = {f["filterType"]: f for f in entry["filters"]}
        price = filters["PRICE_FILTER"]
        lot = filters["LOT_SIZE"]
        market_lot = filters.get("MARKET_LOT_SIZE", lot)
        notional = filters.get("MIN_NOTIONAL", {}).get("notional", "0")
        percent = filters.get("PERCENT_PRICE", {})
        return cls(
            symbol=entry["symbol"],
            status=entry.get("status", "TRADING"),
            tick_size=Decimal(price["tickSize"]),
            min_price=Decimal(price["minPrice"]),
            max_price=Decimal(price["maxPrice"]),
            step_size=Decimal(lot["stepSize"]),
            min_qty=Decimal(lot["minQty"]),
            max_qty=Decimal(lot["maxQty"]),
            market_step_size=Decimal(market_lot["stepSize"]),
            market_min_qty=Decimal(market_lot["minQty"]),
            market_max_qty=Decimal(market_lot["maxQty"]),
            min_notional=Decimal(notional),
            percent_price_up=Decimal(percent.get("multiplierUp", "0")),
            percent_price_down=Decimal(percent.get("multiplierDown", "0")),
        )

    def to_dict(self) -> dict[str, str]:
        return {
            name: decimal_str(value) if isinstance(value, Decimal) else value
            for name, value in ((n, getattr(self, n)) for n in self.__dataclass_fields__)
        }

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> SymbolRules:
        """From `to_dict`'s output; a filter field missing (stored by an older worker) is left default."""
        return cls(
            **{
                name: data[name] if name in ("symbol", "status") else Decimal(data[name])
                for name in cls.__dataclass_fields__
                if name in data
            }  # type: ignore[arg-type]
        )

    def check_quantity(self, quantity: Decimal, order_type: OrderType) -> None:
        """Raise InvalidOrder naming `quantity` unless it fits the lot size filter."""
        if order_type is OrderType.MARKET:
            step, low, high = self.market_step_size, self.market_min_qty, self.market_max_qty
            name = "MARKET_LOT_SIZE"
        else:
            step, low, high = self.step_size, self.min_qty, self.max_qty
            name = "LOT_SIZE"
        if quantity <= 0:
            raise InvalidOrder("quantity", "must be greater than zero")
        if low and quantity < low:
            raise InvalidOrder("quantity", f"must be at least {decimal_str(low)} ({name} minQty)")
        if high and quantity > high:
            raise InvalidOrder("quantity", f"must be at most {decimal_str(high)} ({name} maxQty)")
        if step and not is_multiple("quantity", quantity, step, low):
            raise InvalidOrder(
                "quantity", f"must be a multiple of step size {decimal_str(step)} ({name} stepSize)"
            )

    def check_price(self, price: Decimal) -> None:
        """Raise InvalidOrder naming `price` unless it fits PRICE_FILTER."""
        if price <= 0:
            raise InvalidOrder("price", "must be greater than zero")
        if self.min_price and price < self.min_price:
            raise InvalidOrder("price", f"must be at least {decimal_str(self.min_price)} (minPrice)")
        if self.max_price and price > self.max_price:
            raise InvalidOrder("price", f"must be at most {decimal_str(self.max_price)} (maxPrice)")
        if self.tick_size and not is_multiple("price", price, self.tick_size, self.min_price):
            raise InvalidOrder(
                "price", f"must be a multiple of tick size {decimal_str(self.tick_size)} (tickSize)"
            )

    def check_notional(self, price: Decimal, quantity: Decimal, *, reduce_only: bool) -> None:
        """Raise InvalidOrder unless price x quantity (exact) reaches MIN_NOTIONAL (reduce-only is exempt)."""
        if reduce_only or not self.min_notional:
            return
        notional = product("quantity", price, quantity)
        if notional < self.min_notional:
            raise InvalidOrder(
                "quantity",
                f"price x quantity = {decimal_str(notional)} must be at least "
                f"{decimal_str(self.min_notional)} (MIN_NOTIONAL)",
            )


def parse_decimal(field: str, text: str) -> Decimal:
    """Parse a request's decimal string; raise InvalidOrder naming `field` if it is not one.

    Accepts plain decimals only ("0.001", "45000"): no exponent, sign, NaN or infinity.
    """
    stripped = text.strip()
    if not stripped:
        raise InvalidOrder(field, "is required")
    if not all(c.isdigit() or c == "." for c in stripped) or stripped.count(".") > 1 or stripped == ".":
        raise InvalidOrder(field, f"must be a plain decimal string like '0.001', got {text!r}")
    try:
        return Decimal(stripped)
    except InvalidOperation as exc:  # pragma: no cover - guarded by the character check
        raise InvalidOrder(field, f"must be a decimal string, got {text!r}") from exc
