"""AdminService over gRPC: risk limits and the kill switches (proto/admin.proto).

Every method first identifies its caller; with authentication on, only a client with
`auth.clients[].admin: true` may call, every other key answers PERMISSION_DENIED.
The audit trail records the caller's name ("anonymous" with authentication off).

Limits are per exchange account: a request naming no account is for the admin client's
`default_account` (else its first account, else the first account configured). Kill
switches are per account too, plus one for every account (a request naming no account);
an account trades under the stricter of its own and that one. An account not configured
answers INVALID_ARGUMENT naming `account`; an admin client whose `auth.clients[].accounts`
leaves the account out answers PERMISSION_DENIED naming it, and such a client may read the
switch for every account but not set it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from order_execution.gateway.auth import Authenticator, PermissionDenied
from order_execution.gateway.handlers import Intake
from order_execution.gateway.risk import RiskGate
from order_execution.gateway.status_mapping import Context, answer
from order_execution.gateway.validation import check_length, parse_request_decimal
from order_execution.orders.errors import InvalidOrder
from order_execution.orders.model import decimal_str
from order_execution.orders.risk_state import AuditEntry, ModeStatus, TradingMode
from order_execution.proto import admin_pb2 as apb
from order_execution.proto import admin_pb2_grpc
from order_execution.runtime.settings import ApiClientSettings, RiskSettings

log = logging.getLogger(__name__)

_MAX_REASON_CHARS = 200
_MAX_AUDIT = 200
_MODE_FROM_PB = {
    apb.ACTIVE: TradingMode.ACTIVE,
    apb.REDUCING: TradingMode.REDUCING,
    apb.HALTED: TradingMode.HALTED,
}
_MODE_TO_PB = {mode: value for value, mode in _MODE_FROM_PB.items()}
LIMIT_FIELDS = tuple(apb.RiskLimits.DESCRIPTOR.fields_by_name)


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    """The AdminService methods; `auth` None means authentication is off (tests, local runs).

    `clients` are the configured API clients (`auth.clients`), for the accounts each admin may
    act on; an admin not among them, or any caller with authentication off, may act on every
    account.
    """

    def __init__(
        self,
        gate: RiskGate,
        intake: Intake,
        auth: Authenticator | None = None,
        *,
        clients: Sequence[ApiClientSettings] = (),
    ) -> None:
        self._gate = gate
        self._intake = intake
        self._auth = auth
        # With authentication off every caller is "anonymous" and may act on every account.
        self._clients = {client.name: client for client in clients} if auth is not None else {}

    async def _admin(self, context: Context) -> str:
        """The calling admin's name ("anonymous" with auth off); see `Authenticator.authenticate_admin`."""
        if self._auth is None:
            return "anonymous"
        return await self._auth.authenticate_admin(context.invocation_metadata(), peer=context.peer())

    def _account(self, actor: str, requested: str) -> str:
        """The account a request naming `requested` is for (empty: the admin's default, see the
        module docstring); raises InvalidOrder (unknown) or PermissionDenied (not the admin's)."""
        client = self._clients.get(actor)
        account = requested or (client.default_account if client else "")
        account = account or (client.accounts[0] if client and client.accounts else self._gate.accounts[0])
        self._gate.state_for(account)  # InvalidOrder naming `account` unless served here
        if client is not None and not client.may_trade(account):
            raise PermissionDenied(
                f"account: client {actor} may not act on account {account!r} "
                f"(its accounts: {', '.join(client.accounts)})"
            )
        return account

    def _switch(self, actor: str, requested: str, *, setting: bool) -> str | None:
        """The account whose switch a request names, or None for the switch for every account
        (empty); an admin limited to some accounts may read that one but not set it."""
        if requested:
            return self._account(actor, requested)
        client = self._clients.get(actor)
        if setting and client is not None and client.accounts:
            raise PermissionDenied(
                f"account: client {actor} is limited to accounts {', '.join(client.accounts)} and may "
                "not set the kill switch for every account; name one of its accounts"
            )
        return None

    def _visible(self, actor: str, account: str | None) -> Sequence[str] | None:
        """The accounts whose audit entries a status of `account`'s switch shows (None: all)."""
        if account is not None:
            return [account]
        client = self._clients.get(actor)
        return client.accounts if client is not None and client.accounts else None

    async def GetRiskLimits(self, request: apb.GetRiskLimitsRequest, context: Context) -> apb.RiskLimits:
        async def get() -> RiskSettings:
            actor = await self._admin(context)
            account = self._account(actor, request.account)
            return await self._gate.state_for(account).limits(self._gate.defaults)

        return limits_to_pb(await answer(context, get))

    async def SetRiskLimits(self, request: apb.SetRiskLimitsRequest, context: Context) -> apb.RiskLimits:
        async def set_limits() -> RiskSettings:
            actor = await self._admin(context)
            account = self._account(actor, request.account)
            check_length("reason", request.reason, _MAX_REASON_CHARS)
            changes = limits_from_pb(request.limits, list(request.fields))
            try:
                limits = await self._gate.set_limits(
                    changes, actor=actor, reason=request.reason, account=account
                )
            except ValueError as exc:
                raise InvalidOrder("limits", _first_error(exc)) from exc
            log.warning(
                "risk limits of account %s changed by %s (%s): %s",
                account,
                actor,
                request.reason or "no reason",
                changes,
            )
            return limits

        return limits_to_pb(await answer(context, set_limits))

    async def GetTradingMode(
        self, request: apb.GetTradingModeRequest, context: Context
    ) -> apb.TradingModeStatus:
        async def get() -> apb.TradingModeStatus:
            actor = await self._admin(context)
            account = self._switch(actor, request.account, setting=False)
            status = await self._gate.switch(account).mode()
            return await self._status(status, request.audit_limit, self._visible(actor, account))

        return await answer(context, get)

    async def SetTradingMode(
        self, request: apb.SetTradingModeRequest, context: Context
    ) -> apb.TradingModeStatus:
        async def set_mode() -> apb.TradingModeStatus:
            actor = await self._admin(context)
            account = self._switch(actor, request.account, setting=True)
            if request.mode not in _MODE_FROM_PB:
                raise InvalidOrder("mode", f"is required (ACTIVE, REDUCING or HALTED), got {request.mode}")
            check_length("reason", request.reason, _MAX_REASON_CHARS)
            mode = _MODE_FROM_PB[request.mode]
            if request.cancel_open and mode is not TradingMode.HALTED:
                raise InvalidOrder("cancel_open", "applies to HALTED only")
            # The cancel of the open orders is recorded with the mode, before the walk: if this
            # gateway dies midway, the leading listener finishes it (service_layer.kill_switch).
            status = await self._gate.set_mode(
                mode, actor=actor, reason=request.reason, account=account, cancel_open=request.cancel_open
            )
            log.warning(
                "trading mode of %s set to %s by %s (%s)",
                status.scope,
                mode,
                actor,
                request.reason or "no reason",
            )
            canceled = 0
            if status.cancel_open is not None:
                canceled = await self._intake.cancel_open(account)
                await self._gate.switch(account).finish_cancel_open(
                    status.cancel_open, actor=actor, canceled=canceled
                )
                log.warning(
                    "kill switch of %s: %d open orders canceled or being canceled", status.scope, canceled
                )
                status = dataclasses.replace(status, cancel_open=None)  # done: no longer pending
            reply = await self._status(status, 0, self._visible(actor, account))
            reply.canceled_orders = canceled
            return reply

        return await answer(context, set_mode)

    async def _status(
        self, status: ModeStatus, audit_limit: int, accounts: Sequence[str] | None
    ) -> apb.TradingModeStatus:
        limit = min(audit_limit or 20, _MAX_AUDIT)
        audit = await self._gate.state.audit_of(limit, accounts=accounts)
        pending = status.cancel_open
        return apb.TradingModeStatus(
            mode=_MODE_TO_PB[status.mode],
            reason=status.reason,
            set_by=status.set_by,
            set_at=status.set_at,
            cancel_open_pending_since=pending.requested_at if pending else 0,
            cancel_open_requested_by=pending.requested_by if pending else "",
            account=status.account or "",
            audit=[
                apb.AuditEntry(
                    time=e.time,
                    actor=e.actor,
                    action=self._action(e, status.account),
                    reason=e.reason,
                    canceled_orders=e.canceled_orders,
                )
                for e in audit
            ],
        )

    def _action(self, entry: AuditEntry, shown: str | None) -> str:
        """An audit entry's action, naming whose it is when the trail mixes switches: with more than
        one account, an entry of another switch than the one `shown` (None: every account's)."""
        if entry.account == shown or len(self._gate.accounts) == 1:
            return entry.action
        whose = "every account" if entry.account is None else f"account {entry.account}"
        return f"{entry.action} ({whose})"


def limits_to_pb(limits: RiskSettings) -> apb.RiskLimits:
    """The limits in force on the wire."""
    return apb.RiskLimits(
        max_order_notional=decimal_str(limits.max_order_notional),
        max_order_quantity=decimal_str(limits.max_order_quantity),
        max_position_quantity={s: decimal_str(q) for s, q in limits.max_position_quantity.items()},
        max_open_orders=limits.max_open_orders,
        max_orders_per_day=limits.max_orders_per_day,
        allowed_symbols=list(limits.allowed_symbols),
        price_band_percent=decimal_str(limits.price_band_percent),
        mark_price_max_age_ms=limits.mark_price_max_age_ms,
    )


def limits_from_pb(message: apb.RiskLimits, fields: list[str]) -> dict[str, Any]:
    """The changes SetRiskLimits names in `fields`, as the settings take them; raises InvalidOrder."""
    if not fields:
        raise InvalidOrder("fields", f"name at least one limit to change ({', '.join(LIMIT_FIELDS)})")
    changes: dict[str, Any] = {}
    for name in fields:
        if name not in LIMIT_FIELDS:
            raise InvalidOrder("fields", f"{name[:40]!r} is not a risk limit ({', '.join(LIMIT_FIELDS)})")
        value = getattr(message, name)
        if name in ("max_order_notional", "max_order_quantity", "price_band_percent"):
            changes[name] = str(parse_request_decimal(name, value))
        elif name == "max_position_quantity":
            changes[name] = {
                symbol: str(parse_request_decimal(f"max_position_quantity[{symbol[:30]}]", quantity))
                for symbol, quantity in value.items()
            }
        elif name == "allowed_symbols":
            changes[name] = list(value)
        else:
            changes[name] = int(value)
    return changes


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return str(exc)
