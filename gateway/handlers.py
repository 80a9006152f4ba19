"""The gateway's intake: every OrderService command through one door, one handler each.

`Intake.handle` runs a command in four steps, the same for all:
1. its shape check (`gateway.validation`: the bounds of every string it carries, before
   anything else reads them; no I/O);
2. its exchange account resolved (`gateway.accounts`, no I/O): the account a new order
   trades on, or the accounts a read or cancel-all covers; an account not configured or
   not the client's is refused here, before anything is charged;
3. admission, applied here and nowhere else: the call is charged to its client's request
   rate (`gateway.admission`) — the API client's own with auth on, else the requester's
   `client` key — as a write, or as a read at `admission.read_cost` (GetOrder, ListOrders,
   a stream's opening). A batch is not charged itself: each item is, as a PlaceOrder;
4. its handler, with the dependencies it names (cosmicpython's bootstrap injects them the
   same way): `place_order`, `own_orders`, `amend`, `bulk_orders`.
The symbol-level admission of a new order (queue depth, create breaker, rate budget) reads
the order's terms, so PlaceOrder's handler applies it after validation and risk.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from order_execution.gateway.accounts import TradingAccounts
from order_execution.gateway.admission import Admission
from order_execution.gateway.amend import amend
from order_execution.gateway.auth import Caller
from order_execution.gateway.bulk_orders import cancel_all, place_batch
from order_execution.gateway.commands import (
    AccountScope,
    AmendOrder,
    CancelAll,
    CancelOrder,
    Command,
    GetOrder,
    ListOrders,
    PlaceBatch,
    PlaceOrder,
    Requester,
    WatchOrders,
)
from order_execution.gateway.own_orders import cancel_order, list_orders, owned_order
from order_execution.gateway.place_order import place_order
from order_execution.gateway.risk import RiskGate
from order_execution.gateway.rules_cache import RulesCache
from order_execution.gateway.validation import (
    check_batch,
    check_cancel,
    check_cancel_all,
    check_create_text,
    check_list,
    check_order_id,
    check_stream_request,
)
from order_execution.orders.store import OrderStore
from order_execution.orders.store_queries import DEFAULT_SCAN_CAP
from order_execution.runtime.settings import RiskSettings
from order_execution.service_layer.kill_switch import cancel_open_orders
from order_execution.tasks.messages import cancel_order_push

R = TypeVar("R")
C = TypeVar("C", bound=Command[Any])
Scoped = TypeVar("Scoped", ListOrders, CancelAll, WatchOrders)  # the commands covering accounts


def _as_sent(command: C, _: Caller | None) -> C:
    """A command that names no account: nothing to resolve."""
    return command


class Charge(enum.Enum):
    """What a command costs its client's request rate."""

    WRITE = enum.auto()
    READ = enum.auto()  # admission.read_cost of a write


@dataclass(frozen=True, slots=True)
class _Route(Generic[C]):
    """How one command type is handled: its shape check, its charge (None: none), its handler,
    and how its account is resolved for the caller."""

    check: Callable[[C], None]
    charge: Charge | None
    run: Callable[[C, Requester], Awaitable[Any]]
    resolve: Callable[[C, Caller | None], C] = _as_sent


@dataclass
class Intake:
    """The handlers of OrderService's commands and what they work with.

    `admission` None: nothing is charged or refused for load (tests); `risk_gate` None: only
    the static `risk` limits apply. `list_scan_cap` bounds the orders one read scans
    (`server.list_scan_cap`). `accounts` are the exchange accounts configured (the account
    `default` alone unless told).
    """

    store: OrderStore
    rules: RulesCache
    risk: RiskSettings
    admission: Admission | None = None
    risk_gate: RiskGate | None = None
    list_scan_cap: int = DEFAULT_SCAN_CAP
    accounts: TradingAccounts = field(default_factory=TradingAccounts)
    _routes: dict[type[Any], _Route[Any]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        def unchecked(_: object) -> None:
            """AmendOrder: charged before anything is read, as it always was."""

        async def opened(command: WatchOrders, _: Requester) -> AccountScope:
            """The stream itself is the update hub's; opening one is checked and charged, and
            answers the accounts it covers."""
            return command.accounts

        def scoped(command: Scoped, caller: Caller | None) -> Scoped:
            """A read or a cancel-all: the accounts it covers."""
            return dataclasses.replace(command, accounts=self.accounts.scope(command.account, caller))

        self._routes = {
            PlaceOrder: _Route(
                check_create_text,
                Charge.WRITE,
                self._place,
                lambda c, caller: dataclasses.replace(c, account=self.accounts.for_order(c.account, caller)),
            ),
            PlaceBatch: _Route(check_batch, None, self._place_batch, self._batch_account),
            CancelOrder: _Route(
                check_cancel, Charge.WRITE, lambda c, r: cancel_order(c, r.caller, store=self.store)
            ),
            CancelAll: _Route(
                check_cancel_all,
                Charge.WRITE,
                lambda c, r: cancel_all(
                    c,
                    r.caller,
                    store=self.store,
                    scan_cap=self.list_scan_cap,
                    accounts=self.accounts.covered(c.accounts),
                ),
                scoped,
            ),
            AmendOrder: _Route(
                unchecked,
                Charge.WRITE,
                lambda c, r: amend(c, r.caller, store=self.store, rules=self.rules, risk_gate=self.risk_gate),
            ),
            GetOrder: _Route(
                lambda c: check_order_id(c.order_id),
                Charge.READ,
                lambda c, r: owned_order(self.store, c.order_id, r.caller),
            ),
            ListOrders: _Route(
                check_list,
                Charge.READ,
                lambda c, r: list_orders(c, r.caller, store=self.store, scan_cap=self.list_scan_cap),
                scoped,
            ),
            WatchOrders: _Route(
                lambda c: check_stream_request(c.symbols, c.user_id, c.resume_token),
                Charge.READ,
                opened,
                scoped,
            ),
        }

    async def handle(self, command: Command[R], requester: Requester) -> R:
        """Check, admit and run `command` for `requester`; returns what its handler returns.

        Raises what the check (InvalidOrder), the account's resolution (InvalidOrder for one
        not configured, PermissionDenied for one not the caller's), the admission (Overloaded)
        or the handler raises; KeyError for a command type without a handler (a bug).
        """
        route = self._routes[type(command)]
        route.check(command)
        command = route.resolve(command, requester.caller)
        if route.charge is not None:
            self._admit(requester, route.charge)
        return cast(R, await route.run(command, requester))

    async def cancel_open(self, account: str | None = None) -> int:
        """Cancel every open order of every client on `account` (None: on every account), through
        the same path as CancelOrder.

        For the kill switch (HALTED with cancel-open; see `service_layer.kill_switch`): orders still
        NEW are canceled locally, the others get a cancel queued for the exchange. Returns how
        many orders changed; one that ended meanwhile is skipped. Not charged to any client.
        """
        return await cancel_open_orders(self.store, cancel_order_push, account)

    def _admit(self, requester: Requester, charge: Charge) -> None:
        """Charge the call to its client's request rate; raises Overloaded (limit client_rate)."""
        if self.admission is None:
            return
        read = charge is Charge.READ
        caller = requester.caller
        if caller is not None:
            self.admission.check_client(
                caller.name, rate=caller.requests_per_second, burst=caller.burst, read=read
            )
        else:
            self.admission.check_client(requester.client or "anonymous", read=read)

    async def _place(self, command: PlaceOrder, requester: Requester) -> Any:
        return await place_order(
            command,
            requester.caller,
            store=self.store,
            rules=self.rules,
            risk=self.risk,
            risk_gate=self.risk_gate,
            admission=self.admission,
        )

    async def _place_batch(self, command: PlaceBatch, requester: Requester) -> Any:
        return await place_batch(command, lambda item: self.handle(item, requester))

    def _batch_account(self, command: PlaceBatch, caller: Caller | None) -> PlaceBatch:
        """The batch's own `account` is checked for the whole call (one the caller may not trade
        refuses the call) and given to the items that name none; each item is then resolved alone."""
        if not command.account:
            return command
        self.accounts.for_order(command.account, caller)
        items = tuple(
            item if item.account else dataclasses.replace(item, account=command.account)
            for item in command.orders
        )
        return dataclasses.replace(command, orders=items)
