"""How the risk state is laid out in Redis: its keys, and quantities as integers of 1e-8.

An account's own keys live under `<account prefix>:risk:` (`orders.account_keys`: the account
`default` keeps `{namespace}:risk:`, another account `{namespace}:@<account>:risk:`): its
limits, its kill switch (`mode`, `cancel_open`), its position and its counting. A few keys
are one per namespace, under `{namespace}:risk:`, whatever the account:
* `marks` — mark prices are the venue's, the same for every account;
* `audit` — one trail of every change (each entry names its account), so the order of
  changes across accounts and the switch for every account reads as it happened;
* `all:mode`, `all:cancel_open` — the kill switch for every account. An account's
  effective mode is the stricter of its own and this one (HALTED > REDUCING > ACTIVE).
What each key holds: `orders.risk_state` and `orders.trading_switch`.

The counting that gates a create (`reserved`, `open_qty`, `orders:<UTC day>`) is done by the
order store's Lua (`orders.store_scripts`) in integer units of 1e-8 of the base asset, so
Redis never rounds; the keys and the units are named here so the store, the risk state and
every reader agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal

from order_execution.orders.account_keys import account_prefix
from order_execution.orders.exact import EXACT
from order_execution.orders.model import DEFAULT_ACCOUNT

QTY_SCALE = 10**8  # quantities in the Lua counting are integers of 1e-8 of the base asset
DAY_COUNTER_TTL_S = 2 * 86400  # a day's order counter outlives its UTC day by one more


def to_units(quantity: Decimal) -> int:
    """`quantity` in 1e-8 units, rounded up (a limit is never under-counted).

    The product is exact (`orders.exact`): in the default 28-digit context a long quantity
    was rounded, possibly down, before the ceiling.
    """
    return int(EXACT.multiply(quantity, Decimal(QTY_SCALE)).to_integral_value(rounding=ROUND_CEILING))


def signed_units(quantity: Decimal) -> int:
    """A signed quantity (a position: negative is short) in 1e-8 units, its size rounded up."""
    units = to_units(abs(quantity))
    return -units if quantity < 0 else units


def from_units(units: int | str) -> Decimal:
    """A 1e-8 unit count back to a Decimal quantity."""
    return Decimal(int(units)) / QTY_SCALE


def utc_day(ms: int) -> str:
    """The UTC date of a Unix ms time, as the per-day order counter names it (2026-12-04)."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


class RiskKeys:
    """The Redis keys of the risk state of one account in one namespace, and the shared ones.

    The account's own under `orders.account_keys.account_prefix` (`{namespace}:risk:...` for
    the account `default`); `marks`, `audit` and the switch for every account (`all_mode`,
    `all_cancel_open`) under `{namespace}:risk:` for every account (see the module docstring).
    """

    def __init__(self, namespace: str, account: str = DEFAULT_ACCOUNT) -> None:
        self._prefix = prefix = f"{account_prefix(namespace, account)}:risk"
        self.limits = f"{prefix}:limits"
        self.mode = f"{prefix}:mode"
        self.cancel_open = f"{prefix}:cancel_open"
        self.positions = f"{prefix}:positions"
        self.reserved = f"{prefix}:reserved"
        self.open_qty = f"{prefix}:open_qty"
        shared = f"{namespace}:risk"
        self.marks = f"{shared}:marks"
        self.audit = f"{shared}:audit"
        self.all_mode = f"{shared}:all:mode"
        self.all_cancel_open = f"{shared}:all:cancel_open"

    def orders_on(self, day: str) -> str:
        """The counter of orders accepted on a UTC day."""
        return f"{self._prefix}:orders:{day}"
