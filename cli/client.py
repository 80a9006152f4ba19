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
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format

from cli.credentials import open_channel as open_gateway_channel
from cli.order_format import order_json, order_line, order_text, update_json
from cli.times import parse_time
from orders.settings import Settings, load_settings
from proto import order_pb2 as pb
from proto import order_pb2_grpc

_SIDES = {"BUY": pb.BUY, "SELL": pb.SELL}
_TYPES = {name: number for name, number in pb.OrderType.items() if number}
_WORKING_TYPES = {name: number for name, number in pb.WorkingType.items() if number}
_TIFS = {"GTC": pb.GTC, "IOC": pb.IOC, "FOK": pb.FOK, "GTX": pb.GTX}
_STATES = [name for name, number in pb.OrderState.items() if number]
_CALL_TIMEOUT_S = 10.0
_CONNECT_TIMEOUT_S = 3.0
RESUME_TOKEN_METADATA = "resume-token"  # trailing metadata of a stream the gateway closed


@dataclass(frozen=True)
class Gateway:
    """Where the CLI sends its calls, and where that address came from (for error messages)."""

    target: str
    source: str


def gateway_target(settings: Settings) -> str:
    """`host:port` of the gateway in `settings`; a wildcard listen address becomes 127.0.0.1."""
    host = settings.server.host
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return f"{host}:{settings.server.grpc_port}"


def open_channel(target: str, settings: Settings) -> grpc.Channel:
    """The channel every order command uses: the API key as metadata, TLS per `client.*`
    (see cli/credentials.py)."""
    return open_gateway_channel(target, settings.client)


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
    create.add_argument("side", type=str.upper, choices=sorted(_SIDES), help="BUY or SELL")
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
        choices=sorted(_TYPES),
        help="default: LIMIT with --price, else MARKET; STOP_MARKET, STOP, TAKE_PROFIT, "
        "TAKE_PROFIT_MARKET and TRAILING_STOP_MARKET wait at the exchange for their trigger",
    )
    create.add_argument("--trigger-price", default="", help="conditional orders: the price that fires it")
    create.add_argument(
        "--working-type",
        type=str.upper,
        choices=sorted(_WORKING_TYPES),
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
        choices=sorted(_TIFS),
        help="time in force for LIMIT orders (default GTC; GTX = post-only); MARKET takes none",
    )
    create.add_argument("--post-only", action="store_true", help="LIMIT only: rest or be rejected (GTX)")
    create.add_argument("--reduce-only", action="store_true", help="only reduce an open position")
    create.add_argument(
        "--client-id",
        default="",
        help="idempotency key, 1-36 of [.A-Z:/a-z0-9_-]; a retry returns the same order",
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
        choices=["", *_STATES],
        metavar="STATE",
        help=f"only orders in this state: {', '.join(_STATES)}",
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


def run_order_command(args: argparse.Namespace, settings: Settings | None = None) -> int:
    """Run the parsed `order` command; returns the exit status (0 ok, 1 the call failed)."""
    settings = settings or load_settings()
    gateway = (
        Gateway(args.target, "--target")
        if getattr(args, "target", None)
        else Gateway(gateway_target(settings), "settings server.host/server.grpc_port")
    )
    with _quiet_broken_pipe(), open_channel(gateway.target, settings) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=_CONNECT_TIMEOUT_S)
        except grpc.FutureTimeoutError:
            _error(
                f"cannot reach the gateway at {gateway.target} (from {gateway.source}).\n"
                "  Start one with `order-execution up`, or point the CLI at a running one with\n"
                "  --target HOST:PORT (or set server.grpc_port in the settings, e.g. "
                "ORDER_EXECUTION__SERVER__GRPC_PORT)."
            )
            return 1
        stub = order_pb2_grpc.OrderServiceStub(channel)
        try:
            return _COMMANDS[args.order_command](stub, args)
        except grpc.RpcError as exc:
            _error(_explain(exc, args, gateway))
            return 1
    return 0  # a reader that went away: nothing more to say


def _explain(exc: grpc.RpcError, args: argparse.Namespace, gateway: Gateway) -> str:
    """The error as a person should read it: code, the gateway's words, what to do next."""
    code: grpc.StatusCode = exc.code()
    detail: str = exc.details() or ""
    hints = {
        grpc.StatusCode.UNAVAILABLE: f"the gateway at {gateway.target} (from {gateway.source}) or what it "
        "depends on is unavailable; retry shortly, or check `/health` on its HTTP port",
        grpc.StatusCode.NOT_FOUND: "`order-execution order list` shows recent orders and their ids",
        grpc.StatusCode.INVALID_ARGUMENT: f"see `order-execution order {args.order_command} --help`",
        grpc.StatusCode.RESOURCE_EXHAUSTED: "a limit was reached; wait a moment and retry",
        grpc.StatusCode.DEADLINE_EXCEEDED: f"the gateway at {gateway.target} did not answer in time; retry",
        grpc.StatusCode.OUT_OF_RANGE: "the resume token is too old; watch again without --resume-token",
        grpc.StatusCode.UNAUTHENTICATED: "set client.api_key in the settings ($ORDER_EXECUTION_API_KEY)",
    }
    hint = hints.get(code)
    return f"{code.name}: {detail}" + (f"\n  {hint}" if hint else "")


def _create(stub: order_pb2_grpc.OrderServiceStub, args: argparse.Namespace) -> int:
    order_type = args.type or ("LIMIT" if args.price else "MARKET")
    tif = args.tif or ("GTC" if order_type == "LIMIT" and not args.post_only else "")
    reply = stub.CreateOrder(
        pb.CreateOrderRequest(
            symbol=args.symbol.upper(),
            side=_SIDES[args.side],
            type=_TYPES[order_type],
            quantity=args.quantity,
            price=args.price,
            time_in_force=_TIFS[tif] if tif else pb.TIF_UNSPECIFIED,
            post_only=args.post_only,
            reduce_only=args.reduce_only,
            client_order_id=args.client_id,
            trigger_price=args.trigger_price,
            working_type=_WORKING_TYPES[args.working_type]
            if args.working_type
            else pb.WORKING_TYPE_UNSPECIFIED,
            price_protect=args.price_protect,
            close_position=args.close_position,
            callback_rate=args.callback_rate,
            activation_price=args.activation_price,
        ),
        timeout=_CALL_TIMEOUT_S,
    )
    if args.json:
        _print_json({"duplicate": reply.duplicate, "order": order_json(reply.order)})
        return 0
    note = " (already existed: same client id)" if reply.duplicate else ""
    print(f"order {reply.order_id} {pb.OrderState.Name(reply.state)}{note}")
    print(order_text(reply.order))
    return 0


def _get(stub: order_pb2_grpc.OrderServiceStub, args: argparse.Namespace) -> int:
    order = stub.GetOrder(pb.GetOrderRequest(order_id=args.order_id), timeout=_CALL_TIMEOUT_S).order
    if args.json:
        _print_json(order_json(order))
    else:
        print(order_text(order))
    return 0


def _cancel(stub: order_pb2_grpc.OrderServiceStub, args: argparse.Namespace) -> int:
    reply = stub.CancelOrder(pb.CancelOrderRequest(order_id=args.order_id), timeout=_CALL_TIMEOUT_S)
    if args.json:
        _print_json(order_json(reply.order))
    else:
        print(f"order {reply.order_id} {pb.OrderState.Name(reply.state)}")
    return 0


def _batch(stub: order_pb2_grpc.OrderServiceStub, args: argparse.Namespace) -> int:
    try:
        requests = _read_batch(args.file)
    except (OSError, ValueError, json_format.ParseError) as exc:
        _error(f"cannot read the batch: {exc}")
        return 1
    reply = stub.CreateOrders(pb.CreateOrdersRequest(orders=requests), timeout=_CALL_TIMEOUT_S)
    failed = 0
    for number, result in enumerate(reply.results, 1):
        failed += bool(result.error_code)
        if args.json:
            ok = {"duplicate": result.response.duplicate, "order": order_json(result.response.order)}
            _print_json(
                {
                    "item": number,
                    **(
                        {"error": result.error_code, "message": result.error_message}
                        if result.error_code
                        else ok
                    ),
                }
            )
        elif result.error_code:
            print(f"{number}: {result.error_code}: {result.error_message}")
        else:
            created = result.response
            note = " (already existed: same client id)" if created.duplicate else ""
            print(f"{number}: order {created.order_id} {pb.OrderState.Name(created.state)}{note}")
    return 1 if failed else 0


def _read_batch(path: str) -> list[pb.CreateOrderRequest]:
    """CreateOrderRequests from JSON lines in `path` ("-" = stdin); blank lines are skipped."""
    with open(sys.stdin.fileno() if path == "-" else path, closefd=path != "-") as source:
        lines = [line for line in source if line.strip()]
    return [json_format.Parse(line, pb.CreateOrderRequest()) for line in lines]


def _cancel_all(stub: order_pb2_grpc.OrderServiceStub, args: argparse.Namespace) -> int:
    reply = stub.CancelAllOrders(
        pb.CancelAllOrdersRequest(symbol=args.symbol.upper()), timeout=_CALL_TIMEOUT_S
    )
    if args.json:
        _print_json({"orders": [order_json(o) for o in reply.orders]})
        return 0
    for order in reply.orders:
        print(order_line(order))
    if not reply.orders:
        print(f"no open orders of ours in {args.symbol.upper()}")
    return 0


def _amend(stub: order_pb2_grpc.OrderServiceStub, args: argparse.Namespace) -> int:
    request = pb.AmendOrderRequest(order_id=args.order_id, price=args.price, quantity=args.quantity)
    order = stub.AmendOrder(request, timeout=_CALL_TIMEOUT_S).order
    if args.json:
        _print_json(order_json(order))
    else:
        print(f"order {order.order_id}: amendment queued (see `order get` or `order watch`)")
    return 0


def _list(stub: order_pb2_grpc.OrderServiceStub, args: argparse.Namespace) -> int:
    orders: list[pb.Order] = []
    token = args.page_token
    while True:
        reply = stub.ListOrders(
            pb.ListOrdersRequest(
                symbol=args.symbol.upper(),
                state=pb.OrderState.Value(args.state) if args.state else pb.STATE_UNSPECIFIED,
                start_time=args.since,
                end_time=args.until,
                limit=args.limit,
                page_token=token,
            ),
            timeout=_CALL_TIMEOUT_S,
        )
        token = reply.next_page_token
        if args.json:
            orders.extend(reply.orders)
        else:
            for order in reply.orders:
                print(order_line(order))
        if not args.all or not token:
            break
        if not args.json:
            sys.stdout.flush()
    if args.json:
        _print_json({"orders": [order_json(o) for o in orders], "next_page_token": token})
    elif not reply.orders and not args.page_token:
        print("no orders")
    elif token:
        print(f"(more: --page-token {token}, or --all)")
    return 0


def _watch(stub: order_pb2_grpc.OrderServiceStub, args: argparse.Namespace) -> int:
    symbols = [s.upper() for s in args.symbol]
    if not args.json:
        print(f"watching {', '.join(symbols) or 'all symbols'} (Ctrl-C to stop)", flush=True)
    stream = stub.StreamOrderUpdates(
        pb.StreamOrderUpdatesRequest(symbols=symbols, user_id=args.user, resume_token=args.resume_token),
        timeout=args.timeout or None,
    )
    seen = 0
    last_token = args.resume_token
    try:
        for update in stream:
            if args.json:
                _print_json(update_json(update))
            else:
                print(order_line(update.order, update_type=update.update_type, fills=list(update.fills)))
            sys.stdout.flush()
            last_token = update.resume_token or last_token
            seen += 1
            if args.count and seen >= args.count:
                stream.cancel()
                return 0
    except grpc.RpcError as exc:
        if exc.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
            return 0
        raise
    except KeyboardInterrupt:
        stream.cancel()
        return 0
    except BrokenPipeError:
        stream.cancel()
        raise
    trailing = dict(stream.trailing_metadata() or ())
    token = str(trailing.get(RESUME_TOKEN_METADATA, "")) or last_token
    _error(
        "the gateway closed the stream (it is shutting down); continue on another replica with\n"
        f"  order-execution order watch --resume-token {token or '<none: no update yet>'}"
    )
    return 0


def _print_json(value: dict[str, Any]) -> None:
    print(json.dumps(value, separators=(",", ":")))


def _error(message: str) -> None:
    print(f"order-execution: {message}", file=sys.stderr)


@contextmanager
def _quiet_broken_pipe() -> Iterator[None]:
    """A reader that closed the pipe (`| head`) ends the command quietly, not with a traceback.

    stdout is pointed at /dev/null so that the interpreter's final flush cannot fail again.
    """
    try:
        yield
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


_COMMANDS: dict[str, Callable[[order_pb2_grpc.OrderServiceStub, argparse.Namespace], int]] = {
    "create": _create,
    "batch": _batch,
    "get": _get,
    "cancel": _cancel,
    "cancel-all": _cancel_all,
    "amend": _amend,
    "list": _list,
    "watch": _watch,
}

__all__ = ["Gateway", "add_order_commands", "gateway_target", "open_channel", "run_order_command"]
