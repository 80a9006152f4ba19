"""One listener replica's leadership over every exchange account, each account on its own.

A replica holds one `LeaderLease` per configured account and tries them all every renewal
(`renew`, every third of `listener.lease_ttl_ms`), at once. For each account:
* its lease held now and not led before: `lead(account)` starts what the account needs;
* led before and its lease held by another replica now (this one froze past the TTL, say):
  `step_down(account)` stops it;
* Redis unreachable for that lease: the account keeps its current role. A leader goes on
  working (everything it does is safe to do twice, see `listener.lease`), a standby waits.

So one replica may lead every account, two replicas may split them, and when the replica
leading some accounts dies, each of its leases lapses and is taken by whichever standby
tries it next, each within about one TTL; an account is never led by two live replicas
except in the window a frozen leader takes to find out, as with one account.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from order_execution.listener.lease import LeaderLease
from order_execution.orders.errors import StoreUnavailable

log = logging.getLogger(__name__)

AccountHook = Callable[[str], Awaitable[None]]


class Leadership:
    """Holds or follows each account's lease and leads the accounts it holds (see the module)."""

    def __init__(
        self, leases: Mapping[str, LeaderLease], *, lead: AccountHook, step_down: AccountHook
    ) -> None:
        self._leases = dict(leases)
        self._lead = lead
        self._step_down = step_down
        self._leading: set[str] = set()

    @property
    def accounts(self) -> list[str]:
        """Every account this replica contends for, in the order given."""
        return list(self._leases)

    @property
    def leading(self) -> frozenset[str]:
        """The accounts this replica leads now."""
        return frozenset(self._leading)

    async def renew(self) -> frozenset[str]:
        """Try every account's lease once, at once; start or stop leading each as its lease says.
        Returns the accounts led afterwards."""
        await asyncio.gather(*(self._renew(account) for account in self._leases))
        return self.leading

    async def _renew(self, account: str) -> None:
        lease = self._leases[account]
        try:
            holding = await lease.hold()
        except StoreUnavailable as exc:
            log.warning(
                "listener lease of account %s: Redis unreachable (%r); keeping the current role", account, exc
            )
            return
        if holding and account not in self._leading:
            log.info("listener %s now leads account %s", lease.holder_id, account)
            self._leading.add(account)
            await self._lead(account)
        elif not holding and account in self._leading:
            self._leading.discard(account)
            log.warning(
                "listener %s lost the lease of account %s to %s; standing by",
                lease.holder_id,
                account,
                await _holder_or_unknown(lease),
            )
            await self._step_down(account)

    async def step_down_all(self) -> None:
        """Stop leading every account (at shutdown); the leases are left to `release`."""
        accounts, self._leading = sorted(self._leading), set()
        await asyncio.gather(*(self._step_down(account) for account in accounts))

    async def release(self) -> None:
        """Give up every lease this replica holds, so standbys take over at once."""
        await asyncio.gather(*(lease.release() for lease in self._leases.values()))


async def _holder_or_unknown(lease: LeaderLease) -> str:
    try:
        return await lease.holder() or "nobody"
    except StoreUnavailable:
        return "?"
