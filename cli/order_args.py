"""`order-execution order ...`: a gRPC client for a running gateway, for people and scripts.

The gateway address is `--target HOST:PORT` (accepted before or after the subcommand),
else the settings' `server.host` and `server.grpc_port` (a wildcard host such as
0.0.0.0 is reached on 127.0.0.1). Read commands take `--json`: `get` prints one object,
`list` one object `{"orders": [...], "next_page_token": "..."}`, `watch` one object per
line. Output piped into a reader that stops early (`| head`) ends the command quietly
with status 0.

`watch` ends with status 0 when the gateway closes the stream cleanly (it does so on
shutdown); it then prints, on stderr, the resume token to continue from on another
replica with `--resume-token`.
"""

from __future__ import annotations

import argparse

from order_execution.cli.times import parse_time
from order_execution.proto import order_pb2 as pb

SIDES = {"BUY": pb.BUY, "SELL": pb.SELL}
TYPES = {name: number for name, number in pb.OrderType.items() if number}
WORKING_TYPES = {name: number for name, number in pb.WorkingType.items() if number}
TIFS = {"GTC": pb.GTC, "IOC": pb.IOC, "FOK": pb.FOK, "GTX": pb.GTX}
STATES = [name for name, number in pb.OrderState.items() if number]


def add_account_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    """`--account NAME`: the exchange account a command is for (settings `accounts`)."""
    parser.add_argument("--account", default="", metavar="NAME", help=help_text)


_EVERY_ACCOUNT = "only this exchange account's orders (default: every account the API key may trade)"


def add_order_commands(parser: argparse.ArgumentParser) -> None:
    """Add `create`, `batch`, `get`, `cancel`, `cancel-all`, `amend`, `list` and `watch` under
    `parser` (the `order` command)."""
    target = argparse.ArgumentParser(add_help=False)
    _add_target(target)
    _add_target(parser)  # so `order --target X get ...` and `order get ... --target X` both work
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument(
        "--json", action="store_true", help="print JSON for scripts instead of text (see `order --help`)"
    )
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="order_command", required=True, metavar="COMMAND")

    create = sub.add_parser(
        "create",
        parents=[target, as_json],
        help="place an order, e.g. `create BTCUSDT BUY 0.001 --price 45000`",
        description="Place an order; prints its id and state (NEW once stored and queued).",
    )
    create.add_argument("symbol", help="e.g. BTCUSDT (case-insensitive)")
    create.add_argument("side", type=str.upper, choices=sorted(SIDES), help="BUY or SELL")
    create.add_argument(
        "quantity",
        nargs="?",
        default="",
        help="decimal base-asset quantity, e.g. 0.001 (none with --close-position)",
    )
    create.add_argument("--price", default="", help="limit price (decimal); omit for a MARKET order")
    create.add_argument(
        "--type",
        type=str.upper,
        choices=sorted(TYPES),
        help="default: LIMIT with --price, else MARKET; STOP_MARKET, STOP, TAKE_PROFIT, "
        "TAKE_PROFIT_MARKET and TRAILING_STOP_MARKET wait at the exchange for their trigger",
    )
    create.add_argument("--trigger-price", default="", help="conditional orders: the price that fires it")
    create.add_argument(
        "--working-type",
        type=str.upper,
        choices=sorted(WORKING_TYPES),
        help="conditional orders: price watched",
    )
    create.add_argument("--price-protect", action="store_true", help="conditional orders: trigger protection")
    create.add_argument(
        "--close-position",
        action="store_true",
        help="STOP_MARKET/TAKE_PROFIT_MARKET: close the whole position",
    )
    create.add_argument("--callback-rate", default="", help="TRAILING_STOP_MARKET: percent, 0.1-10")
    create.add_argument("--activation-price", default="", help="TRAILING_STOP_MARKET: start trailing here")
    create.add_argument(
        "--tif",
        type=str.upper,
        choices=sorted(TIFS),
        help="time in force for LIMIT orders (default GTC; GTX = post-only); MARKET takes none",
    )
    create.add_argument("--post-only", action="store_true", help="LIMIT only: rest or be rejected (GTX)")
    create.add_argument("--reduce-only", action="store_true", help="only reduce an open position")
    create.add_argument(
        "--client-id",
        default="",
        help="idempotency key, 1-36 of [.A-Z:/a-z0-9_-]; a retry returns the same order",
    )
    add_account_option(
        create, "exchange account to trade on (default: the API key's default account, else the first)"
    )

    batch = sub.add_parser(
        "batch",
        parents=[target, as_json],
        help="place several orders in one call, from JSON lines",
        description="Place up to 20 orders in one call. Each input line is one JSON object with "
        "CreateOrderRequest's field names and enum names, e.g. "
        '{"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.001", "price": "45000", '
        '"time_in_force": "GTC", "client_order_id": "a1"}. Each item succeeds or fails on its own; '
        "the status is 1 if any failed.",
    )
    batch.add_argument("file", nargs="?", default="-", help="file of JSON lines (default: stdin)")
    add_account_option(batch, "exchange account of the items that name none (default: the API key's default)")

    get = sub.add_parser(
        "get", parents=[target, as_json], help="show one order", description="Show one order and its fills."
    )
    get.add_argument("order_id", help="the id CreateOrder returned")
    cancel = sub.add_parser(
        "cancel",
        parents=[target, as_json],
        help="cancel an order",
        description="Cancel an order: CANCELED at once if not sent yet, else PENDING_CANCEL until "
        "the exchange answers.",
    )
    cancel.add_argument("order_id", help="the id CreateOrder returned")
    cancel_all = sub.add_parser(
        "cancel-all",
        parents=[target, as_json],
        help="cancel every open order in a symbol",
        description="Cancel every open order (conditional ones too) in SYMBOL; lists the orders moved.",
    )
    cancel_all.add_argument("symbol", help="e.g. BTCUSDT (case-insensitive)")
    add_account_option(cancel_all, _EVERY_ACCOUNT)
    amend = sub.add_parser(
        "amend",
        parents=[target, as_json],
        help="change price/quantity of a resting LIMIT order",
        description="Amend a resting LIMIT order; the new version arrives as an update (see `watch`).",
    )
    amend.add_argument("order_id", help="the id CreateOrder returned")
    amend.add_argument("--price", default="", help="new limit price (default: unchanged)")
    amend.add_argument("--quantity", default="", help="new quantity (default: unchanged)")

    listing = sub.add_parser(
        "list",
        parents=[target, as_json],
        help="list orders, newest first",
        description="List orders, newest first, a page at a time (--all for every page).",
    )
    listing.add_argument("--symbol", default="", help="only this symbol (default: all)")
    listing.add_argument(
        "--state",
        type=str.upper,
        default="",
        choices=["", *STATES],
        metavar="STATE",
        help=f"only orders in this state: {', '.join(STATES)}",
    )
    listing.add_argument(
        "--since",
        type=_time_arg,
        default=0,
        metavar="WHEN",
        help="created at or after WHEN: an age (90s, 10m, 2h, 1d, 1w) or an ISO time "
        "(2026-12-04T10:00, local unless it has an offset)",
    )
    listing.add_argument(
        "--until", type=_time_arg, default=0, metavar="WHEN", help="created before WHEN (same forms)"
    )
    listing.add_argument("--limit", type=int, default=20, help="orders per page, 1-500 (default %(default)s)")
    listing.add_argument("--page-token", default="", help="continue where the previous page ended")
    listing.add_argument("--all", action="store_true", help="fetch every page, not just the first")
    add_account_option(listing, _EVERY_ACCOUNT)

    watch = sub.add_parser(
        "watch",
        parents=[target, as_json],
        help="print order updates as they happen",
        description="Print every order update as it happens: every state (NEW, SUBMITTING, "
        "SUBMITTED, ...) and every fill.",
    )
    watch.add_argument(
        "--symbol", action="append", default=[], help="only this symbol; repeatable (default: all)"
    )
    watch.add_argument("--user", default="", help="only this user's orders (default: every user)")
    watch.add_argument(
        "--resume-token", default="", help="continue after this update (printed when a stream ends)"
    )
    watch.add_argument("--count", type=int, default=0, help="stop after this many updates (0 = never)")
    watch.add_argument("--timeout", type=float, default=0, help="stop after this many seconds (0 = never)")
    add_account_option(watch, _EVERY_ACCOUNT)


def _add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        metavar="HOST:PORT",
        default=argparse.SUPPRESS,  # given on either level, it is not reset by the other
        help="gateway address (default: server.host and server.grpc_port from the settings, "
        "i.e. --config or $ORDER_EXECUTION__SERVER__GRPC_PORT; 127.0.0.1:50051 if unset)",
    )


def _time_arg(text: str) -> int:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
