"""The kill switch: one per exchange account, and one for every account.

Each switch is a trading mode (ACTIVE, REDUCING, HALTED) with who set it, when and why,
and the last "cancel every open order" a HALTED switch asked for (`orders.cancel_open`).
An account trades under its effective mode: the stricter of its own switch and the switch
for every account (HALTED > REDUCING > ACTIVE); the order store's create step applies it
atomically (`orders.store_scripts`). Every change is audited (`orders.risk_audit`). The
keys are in `orders.risk_layout`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis

from order_execution.orders.cancel_open import CANCEL_OPEN_ACTION, CancelOpenRequest, CancelOpenState
from order_execution.orders.model import DEFAULT_ACCOUNT, now_ms
from order_execution.orders.risk_audit import AuditEntry, add_audit
from order_execution.orders.store_outages import store_adapter
from order_execution.runtime.redis_connection import reply_text


class TradingMode(StrEnum):
    """The kill switch. REDUCING takes only orders that shrink a position; HALTED takes none."""

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


MODE_VALUES = {TradingMode.ACTIVE: 0, TradingMode.REDUCING: 1, TradingMode.HALTED: 2}  # also strictness


@dataclass(frozen=True, slots=True)
class ModeStatus:
    """One switch as stored: its mode, who set it, when (Unix ms, 0 = never) and why."""

    mode: TradingMode
    reason: str = ""
    set_by: str = ""
    set_at: int = 0
    cancel_open: CancelOpenRequest | None = None  # a cancel of the open orders still pending
    account: str | None = DEFAULT_ACCOUNT  # whose switch; None: the switch for every account

    @property
    def scope(self) -> str:
        """Whose switch this is, in words: "account <name>" or "every account"."""
        return "every account" if self.account is None else f"account {self.account}"


def stricter(own: ModeStatus, every_account: ModeStatus) -> ModeStatus:
    """The effective switch of an account: `every_account`'s if it is stricter, else its `own`."""
    return every_account if MODE_VALUES[every_account.mode] > MODE_VALUES[own.mode] else own


def mode_status(
    mode_fields: dict[Any, Any], cancel_fields: dict[Any, Any], account: str | None
) -> ModeStatus:
    """The status the hashes of a switch hold as Redis returned them (ACTIVE if never set), with
    its cancel of the open orders if one is pending."""
    raw = {reply_text(k): reply_text(v) for k, v in mode_fields.items()}
    request = CancelOpenRequest.from_fields(cancel_fields)
    pending = request if request is not None and request.pending else None
    return ModeStatus(
        TradingMode(raw.get("mode", "ACTIVE")),
        raw.get("reason", ""),
        raw.get("set_by", ""),
        int(raw.get("set_at", "0")),
        pending,
        account,
    )


@dataclass(frozen=True, slots=True)
class Switches:
    """The switch for every account and each account's own, read together."""

    every_account: ModeStatus
    accounts: dict[str, ModeStatus]

    def effective(self, account: str) -> ModeStatus:
        """`account`'s effective switch (`stricter`); KeyError for an account not read."""
        return stricter(self.accounts[account], self.every_account)


@store_adapter
class TradingSwitch:
    """One kill switch in Redis: an account's (`account` its name) or every account's (None).

    `mode_key` and `cancel_open_key` are its hashes, `audit_key` the shared audit stream
    (`orders.risk_layout.RiskKeys`).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        mode_key: str,
        cancel_open_key: str,
        audit_key: str,
        account: str | None,
    ) -> None:
        self._redis = client
        self.mode_key = mode_key
        self.cancel_open_key = cancel_open_key
        self._audit_key = audit_key
        self.account = account

    async def mode(self) -> ModeStatus:
        """The mode (ACTIVE if never set), with the cancel of open orders still pending, if any."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(self.mode_key)
        pipe.hgetall(self.cancel_open_key)
        mode_raw, cancel_raw = await pipe.execute()
        return mode_status(mode_raw, cancel_raw, self.account)

    async def set_mode(
        self, mode: TradingMode, *, actor: str, reason: str, cancel_open: bool = False
    ) -> ModeStatus:
        """Set the mode for every replica at once and audit it; returns the new status.

        `cancel_open` (HALTED only, else ValueError) records in the same transaction that
        every open order this switch covers (the account's, or every account's) is to be
        canceled: the caller walks them (`service_layer.kill_switch`) and then calls
        `finish_cancel_open`; if it dies first, the leading listener finishes it. Leaving
        HALTED drops a cancel still pending (audited), so a listener never cancels orders
        placed after trading resumed.
        """
        if cancel_open and mode is not TradingMode.HALTED:
            raise ValueError("cancel_open applies to HALTED only")
        at = now_ms()
        request = CancelOpenRequest(secrets.token_hex(8), actor, at, reason) if cancel_open else None
        status = ModeStatus(mode, reason, actor, at, request, self.account)

        async def write(pipe: Any) -> None:
            previous = CancelOpenRequest.from_fields(await pipe.hgetall(self.cancel_open_key))
            pipe.multi()
            pipe.hset(
                self.mode_key,
                mapping={"mode": mode.value, "reason": reason, "set_by": actor, "set_at": str(at)},
            )
            self._audit(pipe, at, actor, f"mode {mode.value}", reason)
            if request is not None:
                pipe.hset(self.cancel_open_key, mapping=request.fields())  # every field
            elif mode is not TradingMode.HALTED and previous is not None and previous.pending:
                pipe.hset(
                    self.cancel_open_key,
                    mapping={"state": CancelOpenState.DROPPED.value, "done_by": actor, "done_at": str(at)},
                )
                why = (
                    f"mode {mode.value} before the cancel of open orders requested by "
                    f"{previous.requested_by} at {previous.requested_at} (Unix ms) completed"
                )
                self._audit(pipe, at, actor, "cancel open orders dropped", why)

        await self._redis.transaction(write, self.cancel_open_key)
        return status

    async def cancel_open(self) -> CancelOpenRequest | None:
        """The last cancel of the open orders this switch asked for (any state), or None."""
        return CancelOpenRequest.from_fields(await self._redis.hgetall(self.cancel_open_key))

    async def finish_cancel_open(
        self,
        request: CancelOpenRequest,
        *,
        actor: str,
        canceled: int,
        action: str = CANCEL_OPEN_ACTION,
    ) -> bool:
        """Audit a completed walk over the open orders and mark `request` DONE.

        The audit entry is written whatever happened meanwhile (the walk did change those
        orders); the record is marked DONE only if it is still this request and pending, so
        a walk that ends late never closes a newer request. Returns whether it marked it.
        """
        done_at = now_ms()

        async def write(pipe: Any) -> bool:
            current = CancelOpenRequest.from_fields(await pipe.hgetall(self.cancel_open_key))
            mark = current is not None and current.pending and current.request_id == request.request_id
            pipe.multi()
            if mark:
                pipe.hset(
                    self.cancel_open_key,
                    mapping={
                        "state": CancelOpenState.DONE.value,
                        "done_by": actor,
                        "done_at": str(done_at),
                        "canceled": str(canceled),
                    },
                )
            self._audit(pipe, done_at, actor, action, request.reason, canceled)
            return mark

        return bool(await self._redis.transaction(write, self.cancel_open_key, value_from_callable=True))

    def _audit(self, pipe: Any, at: int, actor: str, action: str, reason: str, canceled: int = 0) -> None:
        add_audit(pipe, self._audit_key, AuditEntry(at, actor, action, reason, canceled, self.account))
