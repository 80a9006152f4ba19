"""Which exchange account a request is for: decided here, once per request, by the intake.

A new order trades on the account its request names (`CreateOrderRequest.account`; a batch
item naming none takes `CreateOrdersRequest.account`), else its client's `default_account`,
else the client's first account (`auth.clients[].accounts`), else the first configured
account (`accounts:`; with none configured that is `default`). With auth off any configured
account may be named.

ListOrders, StreamOrderUpdates and CancelAllOrders cover the account the request names,
else every account the client may trade (`AccountScope`). GetOrder, CancelOrder and
AmendOrder name no account: an order on an account the caller may not trade answers
NOT_FOUND, as another client's order does (`gateway.own_orders`).

An account that is not configured is refused INVALID_ARGUMENT (field `account`, listing the
configured ones); a configured one the client may not trade, PERMISSION_DENIED naming it.
"""

from __future__ import annotations

from dataclasses import dataclass

from order_execution.gateway.auth import Caller
from order_execution.gateway.commands import AccountScope
from order_execution.gateway.validation import quote
from order_execution.orders.errors import InvalidOrder
from order_execution.orders.model import DEFAULT_ACCOUNT


@dataclass(frozen=True, slots=True)
class TradingAccounts:
    """The accounts configured here (`Settings.account_names`), in order: the first is the default."""

    names: tuple[str, ...] = (DEFAULT_ACCOUNT,)

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError("TradingAccounts needs at least one account")

    def for_order(self, requested: str, caller: Caller | None) -> str:
        """The account a new order of `caller` (None: auth off) trades on: `requested`, else the
        caller's default (module docstring). Raises InvalidOrder (field `account`) for an
        account not configured, PermissionDenied naming one the caller may not trade."""
        account = self.requested_or_default(requested, caller)
        self.check(account, caller)
        return account

    def requested_or_default(self, requested: str, caller: Caller | None) -> str:
        """`requested`, else the account a new order of `caller` would trade on; unchecked (for
        counting a refusal under the account it was for)."""
        return requested or self._default(caller)

    def scope(self, requested: str, caller: Caller | None) -> AccountScope:
        """The accounts a read or a cancel-all of `caller` covers: the one `requested`, else
        every account the caller may trade (None when that is every account). Raises as
        `for_order` for a `requested` account."""
        if requested:
            self.check(requested, caller)
            return frozenset((requested,))
        if caller is not None and caller.accounts:
            return frozenset(caller.accounts)
        return None

    def covered(self, scope: AccountScope) -> tuple[str, ...]:
        """The configured accounts in `scope` (None: all of them), in configured order."""
        return tuple(name for name in self.names if scope is None or name in scope)

    def _default(self, caller: Caller | None) -> str:
        if caller is not None:
            if caller.default_account:
                return caller.default_account
            if caller.accounts:
                return caller.accounts[0]
        return self.names[0]

    def check(self, account: str, caller: Caller | None) -> None:
        """Raise InvalidOrder (field `account`) if `account` is not configured, PermissionDenied
        naming it if `caller` (None: auth off, any account) may not trade it."""
        if account not in self.names:
            raise InvalidOrder(
                "account", f"unknown account {quote(account)}; configured: {', '.join(self.names)}"
            )
        if caller is not None:
            caller.check_account(account)


def in_scope(scope: AccountScope, account: str) -> bool:
    """Whether an order on `account` is covered by `scope`."""
    return scope is None or account in scope
