"""How the risk state is laid out in Redis: its keys, and quantities as integers of 1e-8.

Every key lives under `{namespace}:risk:` (what each holds: `orders.risk_state`). The
counting that gates a create (`reserved`, `open_qty`, `orders:<UTC day>`) is done by the
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
    """The Redis keys of the risk state of one account in one namespace.

    Under `orders.account_keys.account_prefix`: `{namespace}:risk:...` for the account `default`.
    """

    def __init__(self, namespace: str, account: str = DEFAULT_ACCOUNT) -> None:
        prefix = f"{account_prefix(namespace, account)}:risk"
        self.limits = f"{prefix}:limits"
        self.mode = f"{prefix}:mode"
        self.cancel_open = f"{prefix}:cancel_open"
        self.audit = f"{prefix}:audit"
        self.marks = f"{prefix}:marks"
        self.positions = f"{prefix}:positions"
        self.reserved = f"{prefix}:reserved"
        self.open_qty = f"{prefix}:open_qty"

    def orders_on(self, day: str) -> str:
        """The counter of orders accepted on a UTC day."""
        return f"{self.limits.rsplit(':', 1)[0]}:orders:{day}"
