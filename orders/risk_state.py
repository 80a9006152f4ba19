"""Pre-trade risk state shared by every replica through Redis.

What lives here, all under `{namespace}:risk:`:
* `limits` — overrides of the settings' `risk` section set at runtime (AdminService
  SetRiskLimits): field -> JSON value; the settings are the defaults;
* `mode` — the kill switch: ACTIVE, REDUCING or HALTED, with who set it, when and why;
* `cancel_open` — the last "cancel every open order" a HALTED switch asked for: who, when,
  why, and whether it is still pending, done (by whom, how many orders) or dropped (the mode
  left HALTED first); the record is `orders.cancel_open`;
* `audit` — a stream of every change of the above (who, when, why);
* `marks` — mark prices the listener polls from premiumIndex: symbol -> "<price> <ms>";
* `positions` — the account's position per symbol in 1e-8 units (signed), kept by the
  listener from positionRisk and ACCOUNT_UPDATE;
* `reserved`, `open_qty`, `orders:<UTC day>` — the counting the order store's Lua does
  (`orders.store_scripts`); read here.

The key names and the 1e-8 units are in `orders.risk_layout`.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, cast

import redis.asyncio as aioredis

from order_execution.orders.cancel_open import CANCEL_OPEN_ACTION, CancelOpenRequest, CancelOpenState
from order_execution.orders.model import DEFAULT_ACCOUNT, decimal_str, now_ms
from order_execution.orders.risk_layout import RiskKeys, from_units, signed_units, utc_day
from order_execution.orders.store_outages import store_adapter
from order_execution.runtime.redis_connection import reply_text
from order_execution.runtime.settings import RiskSettings

_AUDIT_MAX = 1000


class TradingMode(StrEnum):
    """The kill switch. REDUCING takes only orders that shrink a position; HALTED takes none."""

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


MODE_VALUES = {TradingMode.ACTIVE: 0, TradingMode.REDUCING: 1, TradingMode.HALTED: 2}


@dataclass(frozen=True, slots=True)
class MarkPrice:
    price: Decimal
    time_ms: int  # when the listener read it (Unix ms)


@dataclass(frozen=True, slots=True)
class ModeStatus:
    mode: TradingMode
    reason: str = ""
    set_by: str = ""
    set_at: int = 0
    cancel_open: CancelOpenRequest | None = None  # a cancel of the open orders still pending


@dataclass(frozen=True, slots=True)
class AuditEntry:
    time: int
    actor: str
    action: str
    reason: str
    canceled_orders: int = 0


@store_adapter
class RiskState:
    """Reads and writes the shared risk state of one exchange account (see the module docstring):
    `account`'s keys (`RiskKeys(namespace, account)`); the account `default` keeps `{namespace}:risk:`."""

    def __init__(
        self, client: aioredis.Redis, *, namespace: str = "oe", account: str = DEFAULT_ACCOUNT
    ) -> None:
        self._redis = client
        self.account = account
        self.keys = RiskKeys(namespace, account)

    # --- limits -------------------------------------------------------------------

    async def limits(self, defaults: RiskSettings) -> RiskSettings:
        """The limits in force: `defaults` overlaid with the stored overrides."""
        raw = cast(dict[Any, Any], await self._redis.hgetall(self.keys.limits))
        return overlay(defaults, {reply_text(k): json.loads(v) for k, v in raw.items()})

    async def set_limits(
        self, defaults: RiskSettings, changes: dict[str, Any], *, actor: str, reason: str
    ) -> RiskSettings:
        """Store `changes` (field -> value, as the settings take it) and audit them.

        Raises ValueError naming a field that is unknown or a value the settings refuse;
        nothing is stored then. Returns the limits now in force.
        """
        current = await self.limits(defaults)
        merged = overlay(current, changes)  # validates before anything is written
        stored = {name: json.dumps(merged.model_dump(mode="json")[name]) for name in changes}
        action = "limits " + ", ".join(f"{name}={stored[name]}" for name in sorted(stored))
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self.keys.limits, mapping={name: value for name, value in stored.items()})
        self._audit(pipe, AuditEntry(now_ms(), actor, action, reason))
        await pipe.execute()
        return merged

    # --- the kill switch ------------------------------------------------------------

    async def mode(self) -> ModeStatus:
        """The trading mode (ACTIVE if never set), with the cancel of open orders still pending, if any."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.mode)
        pipe.hgetall(self.keys.cancel_open)
        mode_raw, cancel_raw = await pipe.execute()
        raw = {reply_text(k): reply_text(v) for k, v in mode_raw.items()}
        request = CancelOpenRequest.from_fields(cancel_raw)
        pending = request if request is not None and request.pending else None
        if not raw:
            return ModeStatus(TradingMode.ACTIVE, cancel_open=pending)
        return ModeStatus(
            TradingMode(raw.get("mode", "ACTIVE")),
            raw.get("reason", ""),
            raw.get("set_by", ""),
            int(raw.get("set_at", "0")),
            pending,
        )

    async def set_mode(
        self, mode: TradingMode, *, actor: str, reason: str, cancel_open: bool = False
    ) -> ModeStatus:
        """Set the mode for every replica at once and audit it; returns the new status.

        `cancel_open` (HALTED only, else ValueError) records in the same transaction that
        every open order is to be canceled: the caller walks them (`service_layer.kill_switch`) and
        then calls `finish_cancel_open`; if it dies first, the leading listener finishes it.
        Leaving HALTED drops a cancel still pending (audited), so a listener never cancels
        orders placed after trading resumed.
        """
        if cancel_open and mode is not TradingMode.HALTED:
            raise ValueError("cancel_open applies to HALTED only")
        status = ModeStatus(mode, reason, actor, now_ms())
        if cancel_open:
            request = CancelOpenRequest(secrets.token_hex(8), actor, status.set_at, reason)
            status = ModeStatus(mode, reason, actor, status.set_at, request)

        async def write(pipe: Any) -> None:
            previous = CancelOpenRequest.from_fields(await pipe.hgetall(self.keys.cancel_open))
            pipe.multi()
            pipe.hset(
                self.keys.mode,
                mapping={"mode": mode.value, "reason": reason, "set_by": actor, "set_at": str(status.set_at)},
            )
            self._audit(pipe, AuditEntry(status.set_at, actor, f"mode {mode.value}", reason))
            if status.cancel_open is not None:
                pipe.hset(self.keys.cancel_open, mapping=status.cancel_open.fields())  # every field
            elif mode is not TradingMode.HALTED and previous is not None and previous.pending:
                pipe.hset(
                    self.keys.cancel_open,
                    mapping={
                        "state": CancelOpenState.DROPPED.value,
                        "done_by": actor,
                        "done_at": str(status.set_at),
                    },
                )
                why = (
                    f"mode {mode.value} before the cancel of open orders requested by "
                    f"{previous.requested_by} at {previous.requested_at} (Unix ms) completed"
                )
                self._audit(pipe, AuditEntry(status.set_at, actor, "cancel open orders dropped", why))

        await self._redis.transaction(write, self.keys.cancel_open)
        return status

    async def cancel_open(self) -> CancelOpenRequest | None:
        """The last cancel of every open order a HALTED switch asked for (any state), or None."""
        return CancelOpenRequest.from_fields(await self._redis.hgetall(self.keys.cancel_open))

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
            current = CancelOpenRequest.from_fields(await pipe.hgetall(self.keys.cancel_open))
            mark = current is not None and current.pending and current.request_id == request.request_id
            pipe.multi()
            if mark:
                pipe.hset(
                    self.keys.cancel_open,
                    mapping={
                        "state": CancelOpenState.DONE.value,
                        "done_by": actor,
                        "done_at": str(done_at),
                        "canceled": str(canceled),
                    },
                )
            self._audit(pipe, AuditEntry(done_at, actor, action, request.reason, canceled))
            return mark

        return bool(await self._redis.transaction(write, self.keys.cancel_open, value_from_callable=True))

    async def audit(self, limit: int = 20) -> list[AuditEntry]:
        """The newest `limit` audit entries, newest first."""
        rows = cast(
            list[tuple[bytes, dict[bytes, bytes]]], await self._redis.xrevrange(self.keys.audit, count=limit)
        )
        entries = []
        for _, fields in rows:
            f = {reply_text(k): reply_text(v) for k, v in fields.items()}
            entries.append(
                AuditEntry(
                    int(f.get("time", "0")),
                    f.get("actor", ""),
                    f.get("action", ""),
                    f.get("reason", ""),
                    int(f.get("canceled", "0")),
                )
            )
        return entries

    def _audit(self, pipe: Any, entry: AuditEntry) -> None:
        pipe.xadd(
            self.keys.audit,
            {
                "time": str(entry.time),
                "actor": entry.actor,
                "action": entry.action,
                "reason": entry.reason,
                "canceled": str(entry.canceled_orders),
            },
            maxlen=_AUDIT_MAX,
            approximate=True,
        )

    # --- mark prices and positions ---------------------------------------------------

    async def save_marks(self, marks: dict[str, Decimal], *, time_ms: int) -> None:
        """Store mark prices read at `time_ms` (Unix ms)."""
        if marks:
            await self._redis.hset(
                self.keys.marks, mapping={s: f"{decimal_str(p)} {time_ms}" for s, p in marks.items()}
            )

    async def marks(self) -> dict[str, MarkPrice]:
        """Every stored mark price by symbol."""
        raw = await self._redis.hgetall(self.keys.marks)
        return {reply_text(k): _mark(reply_text(v)) for k, v in raw.items()}

    async def mark(self, symbol: str) -> MarkPrice | None:
        """One symbol's stored mark price, or None."""
        raw = await self._redis.hget(self.keys.marks, symbol)
        return _mark(reply_text(raw)) if raw is not None else None

    async def set_positions(self, positions: dict[str, Decimal], *, replace: bool = False) -> None:
        """Store signed position amounts by symbol; `replace` drops symbols not in `positions`."""
        pipe = self._redis.pipeline(transaction=True)
        if replace:
            pipe.delete(self.keys.positions)
        if positions:
            pipe.hset(
                self.keys.positions,
                mapping={s: str(signed_units(q)) for s, q in positions.items()},
            )
        await pipe.execute()

    async def positions(self) -> dict[str, Decimal]:
        """The stored position amount per symbol (signed: negative is short)."""
        raw = await self._redis.hgetall(self.keys.positions)
        return {reply_text(k): from_units(reply_text(v)) for k, v in raw.items()}

    async def open_quantities(self) -> dict[str, Decimal]:
        """Quantity of open orders per '<SYMBOL>:<SIDE>' (what the position limit counts)."""
        raw = await self._redis.hgetall(self.keys.open_qty)
        return {reply_text(k): from_units(reply_text(v)) for k, v in raw.items() if int(reply_text(v))}

    async def open_orders(self) -> int:
        """Orders holding a risk reservation (placed with risk on and not final yet)."""
        return int(await self._redis.hlen(self.keys.reserved))

    async def orders_today(self) -> int:
        """Orders accepted today (UTC) under the per-day limit."""
        return int(await self._redis.get(self.keys.orders_on(utc_day(now_ms()))) or 0)


def overlay(base: RiskSettings, changes: dict[str, Any]) -> RiskSettings:
    """`base` with `changes` applied and validated; raises ValueError naming a bad field."""
    unknown = sorted(set(changes) - set(RiskSettings.model_fields))
    if unknown:
        raise ValueError(f"{unknown[0]}: not a risk limit (known: {', '.join(RiskSettings.model_fields)})")
    data = base.model_dump(mode="json")
    data.update(changes)
    return RiskSettings.model_validate(data)


def _mark(text: str) -> MarkPrice:
    price, _, at = text.partition(" ")
    return MarkPrice(Decimal(price), int(at or "0"))


@dataclass(frozen=True, slots=True)
class RiskCheck:
    """The counting limits the order store checks and reserves atomically with a create.

    `max_open_orders` and `max_orders_per_day` 0 mean no limit; `max_position` None too.
    """

    max_open_orders: int = 0
    max_orders_per_day: int = 0
    max_position: Decimal | None = None
