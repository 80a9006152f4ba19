"""`order-execution account ...`: leverage, margin type and position mode at the exchange.

  account show [SYMBOL ...] [--json]             position mode, and each symbol's leverage and margin type
  account leverage SYMBOL N                      set a symbol's leverage (1-125)
  account margin-type SYMBOL ISOLATED|CROSSED    set a symbol's margin type

Each takes `--account NAME`, the exchange account (settings `accounts`) it is for; default the
first configured.

Calls AccountService on the gateway (`--target HOST:PORT`, else the settings' server address) with the
API key of `client.api_key`, which must belong to a client with `admin: true` when authentication is
on. Exit status 0 when the call succeeded, 1 if not.
"""

from __future__ import annotations

import argparse
import json
import sys

import grpc
from google.protobuf.json_format import MessageToDict

from order_execution.cli.client import explain_admin_error, gateway_target, open_channel
from order_execution.cli.order_args import add_account_option
from order_execution.proto import admin_pb2 as apb
from order_execution.proto import admin_pb2_grpc
from order_execution.runtime.settings import Settings, load_settings

_CALL_TIMEOUT_S = 15.0
_MARGIN_TYPES = {"ISOLATED": apb.ISOLATED, "CROSSED": apb.CROSSED}


def add_account_commands(parser: argparse.ArgumentParser) -> None:
    """Add `show`, `leverage` and `margin-type` under `parser` (the `account` command)."""
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--target", metavar="HOST:PORT", default="", help="gateway address")
    add_account_option(common, "exchange account (default: the first configured)")
    sub = parser.add_subparsers(dest="account_command", required=True, metavar="COMMAND")
    show = sub.add_parser("show", parents=[common], help="position mode, leverage and margin type")
    show.add_argument("symbols", nargs="*", metavar="SYMBOL", help="default: every traded symbol")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    leverage = sub.add_parser("leverage", parents=[common], help="set a symbol's leverage")
    leverage.add_argument("symbol", metavar="SYMBOL")
    leverage.add_argument("leverage", type=int, metavar="N", help="1-125")
    margin = sub.add_parser("margin-type", parents=[common], help="set a symbol's margin type")
    margin.add_argument("symbol", metavar="SYMBOL")
    margin.add_argument("margin_type", choices=sorted(_MARGIN_TYPES), metavar="ISOLATED|CROSSED")


def run_account_command(args: argparse.Namespace, settings: Settings | None = None) -> int:
    """Run the parsed `account` command; returns the exit status."""
    settings = settings or load_settings()
    target = args.target or gateway_target(settings)
    with open_channel(target, settings) as channel:
        stub = admin_pb2_grpc.AccountServiceStub(channel)
        try:
            if args.account_command == "leverage":
                reply = stub.SetLeverage(
                    apb.SetLeverageRequest(symbol=args.symbol, leverage=args.leverage, account=args.account),
                    timeout=_CALL_TIMEOUT_S,
                )
                print(
                    f"{reply.symbol}{_on(args)}: leverage {reply.leverage}x "
                    f"(max notional {reply.max_notional} USDT)"
                )
            elif args.account_command == "margin-type":
                request = apb.SetMarginTypeRequest(
                    symbol=args.symbol, margin_type=_MARGIN_TYPES[args.margin_type], account=args.account
                )
                changed = stub.SetMarginType(request, timeout=_CALL_TIMEOUT_S).changed
                print(
                    f"{args.symbol}{_on(args)}: margin type {args.margin_type}"
                    + ("" if changed else " (unchanged)")
                )
            else:
                _show(stub, args)
            return 0
        except grpc.RpcError as exc:
            print(
                explain_admin_error(exc, target, unavailable=", and the exchange reachable"), file=sys.stderr
            )
            return 1


def _on(args: argparse.Namespace) -> str:
    """ " on account NAME" when the command named one."""
    return f" on account {args.account}" if args.account else ""


def _show(stub: admin_pb2_grpc.AccountServiceStub, args: argparse.Namespace) -> None:
    reply = stub.GetAccountSettings(
        apb.GetAccountSettingsRequest(symbols=args.symbols, account=args.account), timeout=_CALL_TIMEOUT_S
    )
    if args.json:
        print(json.dumps(MessageToDict(reply, preserving_proto_field_name=True)))
        return
    mode = "hedge (LONG/SHORT)" if reply.position_mode == apb.HEDGE else "one-way (BOTH)"
    if reply.account:  # an older gateway names none
        print(f"account: {reply.account}")
    print(f"position mode: {mode}")
    for row in reply.symbols:
        margin = apb.MarginType.Name(row.margin_type)
        print(f"  {row.symbol}: leverage {row.leverage}x, {margin}, max notional {row.max_notional} USDT")
