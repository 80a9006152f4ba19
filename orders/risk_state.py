"""Pre-trade risk state shared by every replica through Redis, one per exchange account.

What lives here (the keys: `orders.risk_layout`):
* `limits` — the account's overrides of the settings' `risk` section set at runtime
  (AdminService SetRiskLimits): field -> JSON value; the settings are the defaults of every
  account;
* `mode`, `cancel_open` — the account's kill switch, and beside it the switch for every
  account (`orders.trading_switch`): the account trades under the stricter of the two;
* `audit` — one stream of every change of the above, each entry naming its account
  (`orders.risk_audit`);
* `marks` — mark prices the listener polls from premiumIndex: symbol -> "<price> <ms>". They
  are the venue's, the same for every account: one hash per namespace, whichever account's
  RiskState reads or writes it;
* `positions` — the account's position per symbol in 1e-8 units (signed), kept by the
  listener from positionRisk and ACCOUNT_UPDATE;
* `reserved`, `open_qty`, `orders:<UTC day>` — the account's counting the order store's Lua
  does (`orders.store_scripts`); read here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

import redis.asyncio as aioredis

from order_execution.orders.cancel_open import CANCEL_OPEN_ACTION, CancelOpenRequest
from order_execution.orders.model import DEFAULT_ACCOUNT, decimal_str, now_ms
from order_execution.orders.risk_audit import AuditEntry, add_audit, read_audit
from order_execution.orders.risk_layout import RiskKeys, from_units, signed_units, utc_day
from order_execution.orders.store_outages import store_adapter
from order_execution.orders.trading_switch import (
    MODE_VALUES,
    ModeStatus,
    Switches,
    TradingMode,
    TradingSwitch,
    mode_status,
)
from order_execution.runtime.redis_connection import reply_text
from order_execution.runtime.settings import RiskSettings

__all__ = [
    "MODE_VALUES",
    "AuditEntry",
    "MarkPrice",
    "ModeStatus",
    "RiskCheck",
    "RiskState",
    "Switches",
    "TradingMode",
    "overlay",
]


@dataclass(frozen=True, slots=True)
class MarkPrice:
    price: Decimal
    time_ms: int  # when the listener read it (Unix ms)


@store_adapter
class RiskState:
    """Reads and writes one account's risk state and the shared keys (see the module docstring).

    `switch` is the account's kill switch, `every_account` the switch for every account;
    `mode`, `set_mode`, `cancel_open` and `finish_cancel_open` are the account's own switch's.
    """

    def __init__(
        self, client: aioredis.Redis, *, namespace: str = "oe", account: str = DEFAULT_ACCOUNT
    ) -> None:
        self._redis = client
        self.namespace = namespace
        self.account = account
        self.keys = keys = RiskKeys(namespace, account)
        self.switch = TradingSwitch(
            client,
            mode_key=keys.mode,
            cancel_open_key=keys.cancel_open,
            audit_key=keys.audit,
            account=account,
        )
        self.every_account = TradingSwitch(
            client,
            mode_key=keys.all_mode,
            cancel_open_key=keys.all_cancel_open,
            audit_key=keys.audit,
            account=None,
        )

    def for_account(self, account: str) -> RiskState:
        """The risk state of `account` on the same connection and namespace."""
        return RiskState(self._redis, namespace=self.namespace, account=account)

    # --- limits -------------------------------------------------------------------

    async def limits(self, defaults: RiskSettings) -> RiskSettings:
        """The account's limits in force: `defaults` overlaid with its stored overrides."""
        raw = cast(dict[Any, Any], await self._redis.hgetall(self.keys.limits))
        return _limits(defaults, raw)

    async def limits_of(self, accounts: Sequence[str], defaults: RiskSettings) -> dict[str, RiskSettings]:
        """The limits in force of each of `accounts` (`limits`), in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for account in accounts:
            pipe.hgetall(RiskKeys(self.namespace, account).limits)
        return {
            account: _limits(defaults, raw)
            for account, raw in zip(accounts, await pipe.execute(), strict=True)
        }

    async def set_limits(
        self, defaults: RiskSettings, changes: dict[str, Any], *, actor: str, reason: str
    ) -> RiskSettings:
        """Store `changes` (field -> value, as the settings take it) for this account and audit them.

        Raises ValueError naming a field that is unknown or a value the settings refuse;
        nothing is stored then. Returns the account's limits now in force.
        """
        current = await self.limits(defaults)
        merged = overlay(current, changes)  # validates before anything is written
        stored = {name: json.dumps(merged.model_dump(mode="json")[name]) for name in changes}
        action = "limits " + ", ".join(f"{name}={stored[name]}" for name in sorted(stored))
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self.keys.limits, mapping={name: value for name, value in stored.items()})
        add_audit(pipe, self.keys.audit, AuditEntry(now_ms(), actor, action, reason, 0, self.account))
        await pipe.execute()
        return merged

    # --- the kill switches ----------------------------------------------------------

    async def mode(self) -> ModeStatus:
        """The account's own switch (ACTIVE if never set), with its pending cancel of open orders."""
        return await self.switch.mode()

    async def effective_mode(self) -> ModeStatus:
        """The switch the account trades under: the stricter of its own and every account's."""
        switches = await self.switches([self.account])
        return switches.effective(self.account)

    async def switches(self, accounts: Sequence[str]) -> Switches:
        """The switch for every account and the own switch of each of `accounts`, in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.all_mode)
        pipe.hgetall(self.keys.all_cancel_open)
        for account in accounts:
            keys = RiskKeys(self.namespace, account)
            pipe.hgetall(keys.mode)
            pipe.hgetall(keys.cancel_open)
        replies = await pipe.execute()
        own = {
            account: mode_status(replies[2 + 2 * n], replies[3 + 2 * n], account)
            for n, account in enumerate(accounts)
        }
        return Switches(mode_status(replies[0], replies[1], None), own)

    async def set_mode(
        self, mode: TradingMode, *, actor: str, reason: str, cancel_open: bool = False
    ) -> ModeStatus:
        """Set the account's own switch (`TradingSwitch.set_mode`)."""
        return await self.switch.set_mode(mode, actor=actor, reason=reason, cancel_open=cancel_open)

    async def cancel_open(self) -> CancelOpenRequest | None:
        """The last cancel of the account's open orders its own switch asked for, or None."""
        return await self.switch.cancel_open()

    async def finish_cancel_open(
        self,
        request: CancelOpenRequest,
        *,
        actor: str,
        canceled: int,
        action: str = CANCEL_OPEN_ACTION,
    ) -> bool:
        """Close the account's own switch's `request` (`TradingSwitch.finish_cancel_open`)."""
        return await self.switch.finish_cancel_open(request, actor=actor, canceled=canceled, action=action)

    async def audit(self, limit: int = 20) -> list[AuditEntry]:
        """The newest `limit` changes of this account and of the switch for every account, newest first."""
        return await read_audit(self._redis, self.keys.audit, limit, accounts=(self.account,))

    async def audit_of(self, limit: int = 20, *, accounts: Sequence[str] | None = None) -> list[AuditEntry]:
        """The newest `limit` changes of `accounts` (None: of every account) and of the switch for
        every account, newest first."""
        return await read_audit(self._redis, self.keys.audit, limit, accounts=accounts)

    # --- mark prices and positions ---------------------------------------------------

    async def save_marks(self, marks: dict[str, Decimal], *, time_ms: int) -> None:
        """Store mark prices read at `time_ms` (Unix ms), for every account (they are the venue's)."""
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
        # MULTI/EXEC only when the DEL must go with the HSET: one HSET is atomic on its own.
        pipe = self._redis.pipeline(transaction=replace)
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


def _limits(defaults: RiskSettings, raw: dict[Any, Any]) -> RiskSettings:
    """`defaults` overlaid with a limits hash as Redis returned it."""
    return overlay(defaults, {reply_text(k): json.loads(v) for k, v in raw.items()})


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
