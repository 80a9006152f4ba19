"""Each exchange account's shared rate budget as it stands, for /health and the cluster gauges.

An account's budget holds its own ORDERS windows (10 s, 1 min), its token bucket and its
block (a 429), and reads its egress IP's REQUEST_WEIGHT window and block (a 418, a 429 for
weight): accounts that share an egress show the same weight. Two account names with one
API key share one budget, and show the same figures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from order_execution.exchange.rate_budget import BudgetState, Priority, RateBudget

WINDOWS = ("weight_1m", "orders_10s", "orders_1m")


@dataclass(frozen=True, slots=True)
class Window:
    """One counting window: what is used, our share of the exchange's limit (after the safety
    margin; the cancels' reserve included, as a cancel may use it) and the exchange's own limit."""

    name: str
    used: int
    limit: int
    exchange_limit: int

    @property
    def remaining(self) -> int:
        return max(self.limit - self.used, 0)


@dataclass(frozen=True, slots=True)
class AccountBudget:
    """One account's budget as read: its state, its windows (`WINDOWS`, in order) and bucket size."""

    account: str
    state: BudgetState
    windows: tuple[Window, ...]
    burst: int

    @property
    def blocked(self) -> bool:
        """True while every replica holds off sending for this account (a 429, or a 418 on its IP)."""
        return self.state.blocked_until_ms > 0

    @property
    def banned(self) -> bool:
        """True while the exchange bans the IP this account sends from (418)."""
        return self.blocked and self.state.blocked_reason.startswith("418")


async def read_budget(account: str, budget: RateBudget) -> AccountBudget:
    """`account`'s budget as it stands now (its shared limits reloaded if stale): one round trip,
    two when the limits are reloaded."""
    await budget.refresh_limits()
    state = await budget.state()
    limits = budget.limits
    exchange_limits = (limits.weight_per_minute, limits.orders_per_10s, limits.orders_per_minute)
    used = (state.weight_used, state.orders_10s, state.orders_1m)
    windows = tuple(
        Window(name, count, budget.effective(limit, Priority.CANCEL), limit)
        for name, count, limit in zip(WINDOWS, used, exchange_limits, strict=True)
    )
    return AccountBudget(account, state, windows, budget.burst)


async def read_budgets(budgets: Mapping[str, RateBudget]) -> list[AccountBudget]:
    """Every account's budget (`budgets` by account name), read concurrently, in `budgets`' order.

    Raises the first Redis error.
    """
    return list(await asyncio.gather(*(read_budget(name, budget) for name, budget in budgets.items())))
