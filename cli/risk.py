"""`order-execution risk ...`: the kill switches and the risk limits of a running gateway.

  risk show [--json] [--audit N]         trading mode, who set it and why, limits, audit trail
  risk halt [--reason R] [--cancel-open] no new orders; --cancel-open cancels every open order
  risk reduce [--reason R]               only orders that shrink a position
  risk resume [--reason R]               back to ACTIVE
  risk set FIELD=VALUE ... [--reason R]  change limits on every replica, e.g.
                                         max_open_orders=50 max_position_quantity=BTCUSDT:2,ETHUSDT:20
                                         allowed_symbols=BTCUSDT,ETHUSDT max_order_notional=100000

Every command takes `--account NAME`. Without it, `halt`, `reduce` and `resume` set the kill
switch for every account and `show` shows that one (and each account's own switch that is
not ACTIVE); with it, they set or show that account's own switch. An account trades under
the stricter of the two. Limits are per account: without `--account`, `show` and `set` act
on the default account (the API client's `default_account`, else the first configured).

Calls AdminService on the gateway (`--target HOST:PORT`, else the settings' server
address) with the API key of `client.api_key`, which must belong to a client with
`admin: true` when authentication is on (and whose `accounts`, if any, include the account;
such a client cannot set the switch for every account). Exit status 0 when the call
succeeded, 1 if not.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from order_execution.cli.client import explain_admin_error, gateway_target, open_channel
from order_execution.proto import admin_pb2 as apb
from order_execution.proto import admin_pb2_grpc
from order_execution.runtime.settings import Settings, load_settings

_CALL_TIMEOUT_S = 30.0  # HALTED with --cancel-open walks every open order
_MODES = {"halt": apb.HALTED, "reduce": apb.REDUCING, "resume": apb.ACTIVE}
_STRICTNESS = {apb.ACTIVE: 0, apb.REDUCING: 1, apb.HALTED: 2}
# An account the gateway does not serve or this client may not see: left out of the overview.
_NOT_SHOWN = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED)


def add_risk_commands(parser: argparse.ArgumentParser) -> None:
    """Add `show`, `halt`, `reduce`, `resume` and `set` under `parser` (the `risk` command)."""
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--target", metavar="HOST:PORT", default="", help="gateway address")
    common.add_argument(
        "--account",
        metavar="NAME",
        default="",
        help="the exchange account (default: the switch for every account; the default account's limits)",
    )
    sub = parser.add_subparsers(dest="risk_command", required=True, metavar="COMMAND")
    show = sub.add_parser("show", parents=[common], help="trading mode, limits and audit trail")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.add_argument("--audit", type=int, default=10, help="audit entries to show (default %(default)s)")
    for name, text in (
        ("halt", "stop all new orders"),
        ("reduce", "accept only orders that reduce a position"),
        ("resume", "accept orders again (ACTIVE)"),
    ):
        command = sub.add_parser(name, parents=[common], help=text)
        command.add_argument("--reason", default="", help="why, for the audit trail")
        if name == "halt":
            command.add_argument("--cancel-open", action="store_true", help="also cancel every open order")
    change = sub.add_parser("set", parents=[common], help="change risk limits (FIELD=VALUE ...)")
    change.add_argument("assignments", nargs="+", metavar="FIELD=VALUE")
    change.add_argument("--reason", default="", help="why, for the audit trail")


def run_risk_command(args: argparse.Namespace, settings: Settings | None = None) -> int:
    """Run the parsed `risk` command; returns the exit status."""
    settings = settings or load_settings()
    target = args.target or gateway_target(settings)
    with open_channel(target, settings) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        try:
            if args.risk_command == "show":
                return _show(stub, args, settings)
            if args.risk_command == "set":
                return _set(stub, args)
            return _switch(stub, args, settings)
        except ValueError as exc:
            print(f"order-execution risk: {exc}", file=sys.stderr)
            return 1
        except grpc.RpcError as exc:
            print(explain_admin_error(exc, target), file=sys.stderr)
            return 1


def _show(stub: admin_pb2_grpc.AdminServiceStub, args: argparse.Namespace, settings: Settings) -> int:
    request = apb.GetTradingModeRequest(audit_limit=args.audit, account=args.account)
    status = stub.GetTradingMode(request, timeout=_CALL_TIMEOUT_S)
    limits = stub.GetRiskLimits(apb.GetRiskLimitsRequest(account=args.account), timeout=_CALL_TIMEOUT_S)
    every = _every_account(stub) if args.account else None
    accounts = {} if args.account else _accounts(stub, settings)
    if args.json:
        shown: dict[str, Any] = {"trading": _as_dict(status), "limits": _as_dict(limits)}
        if every is not None:
            shown["every_account"] = _as_dict(every)
        if accounts:
            shown["accounts"] = {name: _as_dict(own) for name, own in accounts.items()}
        print(json.dumps(shown))
        return 0
    print(_scope_line(args.account))
    print(_mode_line(status))
    _print_others(status, every, accounts)
    if status.cancel_open_pending_since:
        whose = f" of account {args.account}" if args.account else ""
        print(
            f"cancel of every open order{whose}: PENDING since {_when(status.cancel_open_pending_since)} "
            f"(asked by {status.cancel_open_requested_by}); the leading listener completes it"
        )
    print(f"limits of account {args.account}:" if args.account else "limits (the default account):")
    for name, value in _as_dict(limits).items():
        print(f"  {name}: {value}")
    print("audit (newest first):")
    for entry in status.audit:
        canceled = f" ({entry.canceled_orders} orders canceled)" if entry.canceled_orders else ""
        why = f": {entry.reason}" if entry.reason else ""
        print(f"  {_when(entry.time)}  {entry.actor}  {entry.action}{canceled}{why}")
    return 0


def _switch(stub: admin_pb2_grpc.AdminServiceStub, args: argparse.Namespace, settings: Settings) -> int:
    request = apb.SetTradingModeRequest(
        mode=_MODES[args.risk_command],
        reason=args.reason,
        cancel_open=bool(getattr(args, "cancel_open", False)),
        account=args.account,
    )
    status = stub.SetTradingMode(request, timeout=_CALL_TIMEOUT_S)
    print(_scope_line(args.account))
    print(_mode_line(status))
    if request.cancel_open:
        whose = f" of account {args.account}" if args.account else ""
        print(f"{status.canceled_orders} open orders{whose} canceled or being canceled")
    if args.account:
        _print_others(status, _every_account(stub), {})
    else:
        _print_others(status, None, _accounts(stub, settings))
    return 0


def _every_account(stub: admin_pb2_grpc.AdminServiceStub) -> apb.TradingModeStatus:
    return stub.GetTradingMode(apb.GetTradingModeRequest(audit_limit=1), timeout=_CALL_TIMEOUT_S)


def _accounts(stub: admin_pb2_grpc.AdminServiceStub, settings: Settings) -> dict[str, apb.TradingModeStatus]:
    """Each configured account's own switch, as far as the gateway shows it to this client."""
    shown = {}
    for name in settings.account_names:
        try:
            request = apb.GetTradingModeRequest(audit_limit=1, account=name)
            shown[name] = stub.GetTradingMode(request, timeout=_CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            if exc.code() not in _NOT_SHOWN:
                raise
    return shown


def _print_others(
    status: apb.TradingModeStatus,
    every: apb.TradingModeStatus | None,
    accounts: dict[str, apb.TradingModeStatus],
) -> None:
    """What else decides the trading of the switch shown: a stricter switch for every account
    (for one account's), or the accounts whose own switch is not ACTIVE (for every account's)."""
    if every is not None and _STRICTNESS[every.mode] > _STRICTNESS[status.mode]:
        print(f"effective: {_mode_line(every).removeprefix('trading: ')} (the switch for every account)")
    for name, own in accounts.items():
        if own.mode != apb.ACTIVE:
            print(
                f"account {name}: {_mode_line(own).removeprefix('trading: ')} "
                f"(its own switch; `risk resume --account {name}` clears it)"
            )


def _scope_line(account: str) -> str:
    if account:
        return f"switch: account {account}"
    return "switch: every account (--account NAME for one account's own)"


def _set(stub: admin_pb2_grpc.AdminServiceStub, args: argparse.Namespace) -> int:
    limits = apb.RiskLimits()
    fields: list[str] = []
    for assignment in args.assignments:
        name, sep, value = assignment.partition("=")
        if not sep or name not in apb.RiskLimits.DESCRIPTOR.fields_by_name:
            known = ", ".join(apb.RiskLimits.DESCRIPTOR.fields_by_name)
            raise ValueError(f"{assignment!r}: expected FIELD=VALUE with FIELD one of {known}")
        _assign(limits, name, value)
        fields.append(name)
    request = apb.SetRiskLimitsRequest(limits=limits, fields=fields, reason=args.reason, account=args.account)
    reply = stub.SetRiskLimits(request, timeout=_CALL_TIMEOUT_S)
    print(f"limits of account {args.account}:" if args.account else "limits (the default account):")
    for name, value in _as_dict(reply).items():
        print(f"  {name}: {value}")
    return 0


def _assign(limits: apb.RiskLimits, name: str, value: str) -> None:
    """Set one field of `limits` from its command-line text; raises ValueError."""
    if name == "max_position_quantity":
        for pair in filter(None, value.split(",")):
            symbol, sep, quantity = pair.partition(":")
            if not sep:
                raise ValueError(f"max_position_quantity: expected SYMBOL:QTY[,SYMBOL:QTY], got {pair!r}")
            limits.max_position_quantity[symbol.upper()] = quantity
    elif name == "allowed_symbols":
        limits.allowed_symbols.extend(s.upper() for s in value.split(",") if s)
    elif name in ("max_open_orders", "max_orders_per_day", "mark_price_max_age_ms"):
        try:
            setattr(limits, name, int(value))
        except ValueError:
            raise ValueError(f"{name}: expected a whole number, got {value!r}") from None
    else:
        setattr(limits, name, value)


def _mode_line(status: apb.TradingModeStatus) -> str:
    mode = apb.TradingMode.Name(status.mode)
    if not status.set_at:
        return f"trading: {mode} (never switched)"
    why = f": {status.reason}" if status.reason else ""
    return f"trading: {mode} since {_when(status.set_at)} by {status.set_by}{why}"


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _as_dict(message: Any) -> dict[str, Any]:
    result: dict[str, Any] = MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return result
