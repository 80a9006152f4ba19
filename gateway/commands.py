"""What OrderService is asked to do, as plain data: one frozen command per intake, no protobuf.

The servicer parses each request into a command (`gateway.proto_mapping`) and hands it, with
its `Requester`, to `gateway.handlers.Intake`, which checks its shape, charges its admission
and runs its one handler. A command's type parameter is what its handler returns.

Strings are carried as the client sent them: their bounds and rules are checked by the
handlers (`gateway.validation`), so a batch item that breaks one fails only itself. An enum
field holds the domain value, or the wire number when the mapping knows none (`Unrecognized`:
0 is unset, anything else unknown), so the error can name what was sent.

`account` is the exchange account as the client named it ("" = none). The intake resolves it
(`gateway.accounts`) before the handler runs: a PlaceOrder's to the account the order trades
on, a read's or a cancel-all's to the `accounts` it covers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from order_execution.gateway.auth import Caller
from order_execution.orders.errors import OrderServiceError
from order_execution.orders.model import Order, OrderState, OrderType, Side, TimeInForce, WorkingType
from order_execution.orders.store import CreateResult
from order_execution.orders.store_queries import OrderPage

R = TypeVar("R")
Unrecognized = int  # a wire enum value with no domain meaning: 0 = unset, else unknown
UNSET: Unrecognized = 0
# The accounts a read or a cancel-all covers; None: every account (nothing named, and the
# client is not limited to some), so orders are not filtered by account.
AccountScope = frozenset[str] | None


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asks: the authenticated caller (None with auth off) and `client`, the key of its
    request rate when there is no caller (the user_id, else the peer's address)."""

    caller: Caller | None = None
    client: str = ""


class Command(Generic[R]):
    """A request to the order service; its handler returns an `R`."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class PlaceOrder(Command[CreateResult]):
    """CreateOrder: a new order, idempotent on `client_order_id` (empty: one is minted)."""

    symbol: str
    side: Side | Unrecognized
    type: OrderType | Unrecognized
    quantity: str = ""
    price: str = ""
    time_in_force: TimeInForce | Unrecognized = UNSET
    client_order_id: str = ""
    reduce_only: bool = False
    post_only: bool = False
    user_id: str = ""
    trigger_price: str = ""
    working_type: WorkingType | Unrecognized = UNSET
    price_protect: bool = False
    close_position: bool = False
    callback_rate: str = ""
    activation_price: str = ""
    account: str = ""  # resolved by the intake: the account the order trades on


@dataclass(frozen=True, slots=True)
class PlaceBatch(Command[list[CreateResult | OrderServiceError]]):
    """CreateOrders: each item placed as `PlaceOrder` alone; an item's error is its result.

    `account` is the account of the items that name none."""

    orders: tuple[PlaceOrder, ...]
    account: str = ""


@dataclass(frozen=True, slots=True)
class CancelOrder(Command[Order]):
    """CancelOrder; `symbol`, if given, must be the order's."""

    order_id: str
    symbol: str = ""


@dataclass(frozen=True, slots=True)
class CancelAll(Command[list[Order]]):
    """CancelAllOrders: every open order of the requester's in `symbol`, on `accounts`."""

    symbol: str
    account: str = ""
    accounts: AccountScope = None  # set by the intake from `account` and the caller


@dataclass(frozen=True, slots=True)
class AmendOrder(Command[Order]):
    """AmendOrder: new `price` and/or `quantity` (empty: unchanged) of a resting LIMIT order."""

    order_id: str
    price: str = ""
    quantity: str = ""


@dataclass(frozen=True, slots=True)
class GetOrder(Command[Order]):
    """GetOrder."""

    order_id: str


@dataclass(frozen=True, slots=True)
class ListOrders(Command[OrderPage]):
    """ListOrders: newest first, filtered; 0 bounds and an empty `states` filter nothing."""

    symbol: str = ""
    states: tuple[OrderState, ...] = ()
    start_ms: int = 0
    end_ms: int = 0
    limit: int = 0
    page_token: str = ""
    account: str = ""
    accounts: AccountScope = None  # set by the intake from `account` and the caller


@dataclass(frozen=True, slots=True)
class WatchOrders(Command[AccountScope]):
    """StreamOrderUpdates' opening: checked and charged here; the update hub serves the stream.
    Its handler returns the accounts the stream covers."""

    symbols: tuple[str, ...] = ()
    user_id: str = ""
    resume_token: str = ""
    account: str = ""
    accounts: AccountScope = None  # set by the intake from `account` and the caller
