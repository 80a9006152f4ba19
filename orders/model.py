"""Order: the record every process shares.

Money and quantities are `Decimal` everywhere; they cross process boundaries as plain
decimal strings (never floats, never exponents). Times are Unix milliseconds.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson


class Side(enum.StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(enum.StrEnum):
    LIMIT = "LIMIT"
    MARKET = "MARKET"
    STOP_MARKET = "STOP_MARKET"
    STOP = "STOP"
    TAKE_PROFIT = "TAKE_PROFIT"
    TAKE_PROFIT_MARKET = "TAKE_PROFIT_MARKET"
    TRAILING_STOP_MARKET = "TRAILING_STOP_MARKET"

    @property
    def is_conditional(self) -> bool:
        """Placed on the exchange's algo service (waits for a trigger), not the order book."""
        return self not in (OrderType.LIMIT, OrderType.MARKET)

    @property
    def has_limit_price(self) -> bool:
        """Rests (or triggers into) a LIMIT order at `price`."""
        return self in (OrderType.LIMIT, OrderType.STOP, OrderType.TAKE_PROFIT)


class WorkingType(enum.StrEnum):
    """The price a conditional order's trigger watches."""

    CONTRACT_PRICE = "CONTRACT_PRICE"
    MARK_PRICE = "MARK_PRICE"


class TimeInForce(enum.StrEnum):
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"
    GTX = "GTX"


class OrderState(enum.StrEnum):
    NEW = "NEW"
    SUBMITTING = "SUBMITTING"
    SUBMITTED = "SUBMITTED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    PENDING_CANCEL = "PENDING_CANCEL"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    UNKNOWN = "UNKNOWN"
    WAITING_TRIGGER = "WAITING_TRIGGER"  # a conditional order the exchange holds until its trigger
    TRIGGERED = "TRIGGERED"  # the conditional order fired; its resulting order is being placed


DEFAULT_ACCOUNT = "default"  # an order stored before accounts existed traded this one


def now_ms() -> int:
    """Wall-clock time in Unix milliseconds."""
    return time.time_ns() // 1_000_000


def decimal_str(value: Decimal) -> str:
    """Format a Decimal as a plain string: no exponent, no trailing zeros ("0.001", "50000").

    Exact for any number of digits: only zeros after the point are dropped. (`normalize()`
    rounds to the context's 28 digits, and this string is what is stored and sent.)
    """
    text = format(value, "f")  # no precision given: every digit, no rounding
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


@dataclass(frozen=True, slots=True)
class Fill:
    """One trade of an order as the exchange reported it; `trade_id` makes recording it idempotent."""

    trade_id: str
    quantity: Decimal
    price: Decimal
    fee: Decimal = Decimal(0)
    fee_asset: str = ""
    maker: bool = False
    time: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "trade_id": self.trade_id,
            "quantity": decimal_str(self.quantity),
            "price": decimal_str(self.price),
            "fee": decimal_str(self.fee),
            "fee_asset": self.fee_asset,
            "maker": self.maker,
            "time": self.time,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fill:
        return cls(
            trade_id=str(data["trade_id"]),
            quantity=Decimal(data["quantity"]),
            price=Decimal(data["price"]),
            fee=Decimal(data.get("fee", "0")),
            fee_asset=data.get("fee_asset", ""),
            maker=bool(data.get("maker", False)),
            time=int(data.get("time", 0)),
        )


@dataclass(frozen=True, slots=True)
class Order:
    """One order, as stored. Immutable: changes go through `fsm` and the store."""

    order_id: str
    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    quantity: Decimal
    price: Decimal | None
    time_in_force: TimeInForce | None
    reduce_only: bool = False
    post_only: bool = False
    user_id: str = ""
    owner: str = ""  # the authenticated API client that placed it ("" with auth off); scopes reads
    account: str = DEFAULT_ACCOUNT  # the exchange account it trades on (settings `accounts`)
    state: OrderState = OrderState.NEW
    filled_quantity: Decimal = Decimal(0)
    average_price: Decimal = Decimal(0)
    fee: Decimal = Decimal(0)
    fee_asset: str = ""
    exchange_order_id: str = ""
    reject_reason: str = ""
    created_at: int = field(default_factory=now_ms)
    updated_at: int = 0
    version: int = 0
    sent_at: int = 0  # when a worker started the POST: the exchange's acceptance window runs from here
    fills: tuple[Fill, ...] = ()
    # Conditional orders (type.is_conditional) only:
    trigger_price: Decimal | None = None
    working_type: WorkingType | None = None
    price_protect: bool = False
    close_position: bool = False
    callback_rate: Decimal | None = None
    activation_price: Decimal | None = None
    algo_id: str = ""  # the exchange's algoId; exchange_order_id is the order it triggered
    # Hedge-mode accounts: "LONG"/"SHORT" forces the side; "" derives it from side and reduce_only.
    position_side: str = ""

    @property
    def exchange_time_in_force(self) -> TimeInForce | None:
        """The timeInForce to send: post-only LIMIT orders go out as GTX."""
        if self.post_only:
            return TimeInForce.GTX
        return self.time_in_force

    def replace(self, **changes: Any) -> Order:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        """Serialize for storage and the event bus; decimals as strings."""
        return orjson.dumps(self.to_dict()).decode()

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Decimal):
                value = decimal_str(value)
            elif f.name == "fills":
                value = [fill.to_dict() for fill in value]
            data[f.name] = value
        return data

    @classmethod
    def from_json(cls, text: str | bytes) -> Order:
        return cls.from_dict(orjson.loads(text))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Order:
        price = data.get("price")
        tif = data.get("time_in_force")
        return cls(
            order_id=data["order_id"],
            client_order_id=data["client_order_id"],
            symbol=data["symbol"],
            side=Side(data["side"]),
            type=OrderType(data["type"]),
            quantity=Decimal(data["quantity"]),
            price=Decimal(price) if price is not None else None,
            time_in_force=TimeInForce(tif) if tif else None,
            reduce_only=bool(data.get("reduce_only", False)),
            post_only=bool(data.get("post_only", False)),
            user_id=data.get("user_id", ""),
            owner=data.get("owner", ""),
            account=data.get("account") or DEFAULT_ACCOUNT,
            state=OrderState(data.get("state", OrderState.NEW)),
            filled_quantity=Decimal(data.get("filled_quantity", "0")),
            average_price=Decimal(data.get("average_price", "0")),
            fee=Decimal(data.get("fee", "0")),
            fee_asset=data.get("fee_asset", ""),
            exchange_order_id=data.get("exchange_order_id", ""),
            reject_reason=data.get("reject_reason", ""),
            created_at=int(data["created_at"]),
            updated_at=int(data.get("updated_at", 0)),
            version=int(data.get("version", 0)),
            sent_at=int(data.get("sent_at", 0)),
            fills=tuple(Fill.from_dict(f) for f in data.get("fills", ())),
            trigger_price=_optional_decimal(data.get("trigger_price")),
            working_type=WorkingType(data["working_type"]) if data.get("working_type") else None,
            price_protect=bool(data.get("price_protect", False)),
            close_position=bool(data.get("close_position", False)),
            callback_rate=_optional_decimal(data.get("callback_rate")),
            activation_price=_optional_decimal(data.get("activation_price")),
            algo_id=data.get("algo_id", ""),
            position_side=data.get("position_side", ""),
        )


def _optional_decimal(value: str | None) -> Decimal | None:
    return Decimal(value) if value is not None else None
