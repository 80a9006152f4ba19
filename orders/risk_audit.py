"""The audit trail of the risk limits and the kill switches: who changed what, when and why.

One Redis stream per namespace (`orders.risk_layout.RiskKeys.audit`) holds every change, of
every account's limits and switch and of the switch for every account, in the order they
happened; each entry names its account (empty: the switch for every account). Entries written
before accounts existed name none and are the account `default`'s. The stream keeps about the
newest `AUDIT_MAX` entries.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis

from order_execution.orders.model import DEFAULT_ACCOUNT
from order_execution.runtime.redis_connection import reply_text

AUDIT_MAX = 1000
_EVERY_ACCOUNT = ""  # the `account` field of an entry of the switch for every account
_PAGE = 200


@dataclass(frozen=True, slots=True)
class AuditEntry:
    time: int
    actor: str
    action: str
    reason: str
    canceled_orders: int = 0
    account: str | None = DEFAULT_ACCOUNT  # None: the switch for every account


def add_audit(pipe: Any, key: str, entry: AuditEntry) -> None:
    """Queue `entry` onto the stream `key` in `pipe` (written with the change it records)."""
    pipe.xadd(
        key,
        {
            "time": str(entry.time),
            "actor": entry.actor,
            "action": entry.action,
            "reason": entry.reason,
            "canceled": str(entry.canceled_orders),
            "account": _EVERY_ACCOUNT if entry.account is None else entry.account,
        },
        maxlen=AUDIT_MAX,
        approximate=True,
    )


async def read_audit(
    client: aioredis.Redis, key: str, limit: int, *, accounts: Collection[str] | None = None
) -> list[AuditEntry]:
    """The newest `limit` entries, newest first: those of the switch for every account and of
    `accounts`, or every entry with `accounts` None."""
    entries: list[AuditEntry] = []
    newest = "+"
    while len(entries) < limit:
        count = limit if accounts is None else max(limit, _PAGE)  # filtered: read on until enough
        rows = cast(
            list[tuple[bytes, dict[bytes, bytes]]], await client.xrevrange(key, max=newest, count=count)
        )
        for entry_id, fields in rows:
            entry = _entry(fields)
            if accounts is None or entry.account is None or entry.account in accounts:
                entries.append(entry)
            newest = f"({reply_text(entry_id)}"
        if len(rows) < count:
            break
    return entries[:limit]


def _entry(fields: dict[bytes, bytes]) -> AuditEntry:
    f = {reply_text(k): reply_text(v) for k, v in fields.items()}
    account = f.get("account", DEFAULT_ACCOUNT)
    return AuditEntry(
        int(f.get("time", "0")),
        f.get("actor", ""),
        f.get("action", ""),
        f.get("reason", ""),
        int(f.get("canceled", "0")),
        None if account == _EVERY_ACCOUNT else account,
    )
