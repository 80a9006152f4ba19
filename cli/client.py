"""`order-execution order ...`: runs the parsed `order` commands against a gateway (see `cli.order_args`)."""

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

from order_execution.cli.credentials import open_channel as open_gateway_channel
from order_execution.cli.order_args import SIDES, TIFS, TYPES, WORKING_TYPES
from order_execution.cli.order_format import order_json, order_line, order_text, update_json
from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc
from order_execution.runtime.settings import Settings, load_settings

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


def explain_admin_error(exc: grpc.RpcError, target: str, *, unavailable: str = "") -> str:
    """An admin call's failure (`risk`, `account`) as a person reads it, with what to do next.

    `unavailable` is what else to check when the gateway answers UNAVAILABLE.
    """
    hint = ""
    if exc.code() is grpc.StatusCode.PERMISSION_DENIED and (exc.details() or "").startswith("account:"):
        hint = "\n  the account must be one of this client's auth.clients[].accounts (empty = every account)"
    elif exc.code() is grpc.StatusCode.PERMISSION_DENIED:
        hint = "\n  the API key (client.api_key) must belong to an auth.clients entry with admin: true"
    elif exc.code() is grpc.StatusCode.UNAVAILABLE:
        hint = f"\n  is a gateway running at {target}{unavailable}? (--target HOST:PORT)"
    return f"{exc.code().name}: {exc.details()}{hint}"


def _create(stub: order_pb2_grpc.OrderServiceStub, args: argparse.Namespace) -> int:
    order_type = args.type or ("LIMIT" if args.price else "MARKET")
    tif = args.tif or ("GTC" if order_type == "LIMIT" and not args.post_only else "")
    reply = stub.CreateOrder(
        pb.CreateOrderRequest(
            symbol=args.symbol.upper(),
            side=SIDES[args.side],
            type=TYPES[order_type],
            quantity=args.quantity,
            price=args.price,
            time_in_force=TIFS[tif] if tif else pb.TIF_UNSPECIFIED,
            post_only=args.post_only,
            reduce_only=args.reduce_only,
            client_order_id=args.client_id,
            trigger_price=args.trigger_price,
            working_type=WORKING_TYPES[args.working_type]
            if args.working_type
            else pb.WORKING_TYPE_UNSPECIFIED,
            price_protect=args.price_protect,
            close_position=args.close_position,
            callback_rate=args.callback_rate,
            activation_price=args.activation_price,
            account=args.account,
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
    reply = stub.CreateOrders(
        pb.CreateOrdersRequest(orders=requests, account=args.account), timeout=_CALL_TIMEOUT_S
    )
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
        pb.CancelAllOrdersRequest(symbol=args.symbol.upper(), account=args.account), timeout=_CALL_TIMEOUT_S
    )
    if args.json:
        _print_json({"orders": [order_json(o) for o in reply.orders]})
        return 0
    for order in reply.orders:
        print(order_line(order))
    if not reply.orders:
        on = f" on account {args.account}" if args.account else ""
        print(f"no open orders of ours in {args.symbol.upper()}{on}")
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
    """Print a page of orders, or with --all every page: a page may be short or empty and still
    carry a token (the gateway reads a bounded number of orders per call), so only an empty
    token ends the listing."""
    orders: list[pb.Order] = []
    shown = 0
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
                account=args.account,
            ),
            timeout=_CALL_TIMEOUT_S,
        )
        token = reply.next_page_token
        shown += len(reply.orders)
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
    elif token:
        none_yet = "" if shown else "none on this page, "
        print(f"({none_yet}more: --page-token {token}, or --all)")
    elif not shown and not args.page_token:
        print("no orders")
    return 0


def _watch(stub: order_pb2_grpc.OrderServiceStub, args: argparse.Namespace) -> int:
    symbols = [s.upper() for s in args.symbol]
    if not args.json:
        on = f" on account {args.account}" if args.account else ""
        print(f"watching {', '.join(symbols) or 'all symbols'}{on} (Ctrl-C to stop)", flush=True)
    stream = stub.StreamOrderUpdates(
        pb.StreamOrderUpdatesRequest(
            symbols=symbols, user_id=args.user, resume_token=args.resume_token, account=args.account
        ),
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

__all__ = ["Gateway", "explain_admin_error", "gateway_target", "open_channel", "run_order_command"]
