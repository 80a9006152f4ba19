"""`order-execution order ...`: a human-friendly gRPC client for a running gateway."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

import grpc

from proto import order_pb2 as pb
from proto import order_pb2_grpc

_SIDES = {"BUY": pb.BUY, "SELL": pb.SELL}
_TYPES = {"LIMIT": pb.LIMIT, "MARKET": pb.MARKET}
_TIFS = {"GTC": pb.GTC, "IOC": pb.IOC, "FOK": pb.FOK, "GTX": pb.GTX}


def add_order_commands(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", default="127.0.0.1:50051", help="gateway address (default %(default)s)")
    sub = parser.add_subparsers(dest="order_command", required=True)

    create = sub.add_parser("create", help="place an order, e.g. `create BTCUSDT BUY 0.001 --price 45000`")
    create.add_argument("symbol")
    create.add_argument("side", type=str.upper, choices=sorted(_SIDES))
    create.add_argument("quantity", help="decimal, e.g. 0.001")
    create.add_argument("--price", default="", help="limit price; omit for a MARKET order")
    create.add_argument(
        "--type", type=str.upper, choices=sorted(_TYPES), help="default: LIMIT with --price, else MARKET"
    )
    create.add_argument(
        "--tif", type=str.upper, choices=sorted(_TIFS), help="time in force (LIMIT default GTC)"
    )
    create.add_argument("--post-only", action="store_true")
    create.add_argument("--reduce-only", action="store_true")
    create.add_argument("--client-id", default="", help="idempotency key (1-36 of [.A-Z:/a-z0-9_-])")

    get = sub.add_parser("get", help="show one order")
    get.add_argument("order_id")
    cancel = sub.add_parser("cancel", help="cancel an order")
    cancel.add_argument("order_id")

    listing = sub.add_parser("list", help="list orders, newest first")
    listing.add_argument("--symbol", default="")
    listing.add_argument("--state", type=str.upper, default="", choices=["", *pb.OrderState.keys()[1:]])
    listing.add_argument("--limit", type=int, default=20)

    watch = sub.add_parser("watch", help="print order updates as they happen")
    watch.add_argument("--symbol", action="append", default=[], help="repeatable; default all symbols")
    watch.add_argument("--count", type=int, default=0, help="stop after this many updates (0 = never)")
    watch.add_argument("--timeout", type=float, default=0, help="stop after this many seconds (0 = never)")


def run_order_command(args: argparse.Namespace) -> int:
    with grpc.insecure_channel(args.target) as channel:
        stub = order_pb2_grpc.OrderServiceStub(channel)
        try:
            return _COMMANDS[args.order_command](stub, args)
        except grpc.RpcError as exc:
            code = exc.code()
            detail = exc.details()
            hint = ""
            if code == grpc.StatusCode.UNAVAILABLE:
                hint = f"\n  is the gateway running at {args.target}? start it with `make run`"
            print(f"error: {code.name}: {detail}{hint}", file=sys.stderr)
            return 1


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
        )
    )
    note = " (already existed: same client id)" if reply.duplicate else ""
    print(f"order {reply.order_id} {pb.OrderState.Name(reply.state)}{note}")
    print(_describe(reply.order))
    return 0


def _get(stub: order_pb2_grpc.OrderServiceStub, args: argparse.Namespace) -> int:
    print(_describe(stub.GetOrder(pb.GetOrderRequest(order_id=args.order_id)).order))
    return 0


def _cancel(stub: order_pb2_grpc.OrderServiceStub, args: argparse.Namespace) -> int:
    reply = stub.CancelOrder(pb.CancelOrderRequest(order_id=args.order_id))
    print(f"order {reply.order_id} {pb.OrderState.Name(reply.state)}")
    return 0


def _list(stub: order_pb2_grpc.OrderServiceStub, args: argparse.Namespace) -> int:
    state = pb.OrderState.Value(args.state) if args.state else pb.STATE_UNSPECIFIED
    reply = stub.ListOrders(pb.ListOrdersRequest(symbol=args.symbol.upper(), state=state, limit=args.limit))
    if not reply.orders:
        print("no orders")
    for order in reply.orders:
        print(_line(order))
    return 0


def _watch(stub: order_pb2_grpc.OrderServiceStub, args: argparse.Namespace) -> int:
    symbols = [s.upper() for s in args.symbol]
    print(f"watching {', '.join(symbols) or 'all symbols'} (Ctrl-C to stop)", flush=True)
    stream = stub.StreamOrderUpdates(
        pb.StreamOrderUpdatesRequest(symbols=symbols), timeout=args.timeout or None
    )
    seen = 0
    try:
        for update in stream:
            print(_line(update.order), flush=True)
            seen += 1
            if args.count and seen >= args.count:
                stream.cancel()
                break
    except grpc.RpcError as exc:
        if exc.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
            raise
    except KeyboardInterrupt:
        stream.cancel()
    return 0


def _line(order: pb.Order) -> str:
    when = datetime.fromtimestamp((order.updated_at or order.created_at) / 1000, UTC).strftime("%H:%M:%S.%f")[
        :-3
    ]
    price = order.price or "MARKET"
    filled = f" filled {order.filled_quantity}" if order.filled_quantity not in ("", "0") else ""
    reason = f"  ({order.reject_reason})" if order.reject_reason else ""
    return (
        f"{when} {order.order_id} {order.symbol} {pb.OrderSide.Name(order.side)} {order.quantity} @ {price} "
        f"{pb.OrderState.Name(order.state)}{filled} v{order.version}{reason}"
    )


def _describe(order: pb.Order) -> str:
    created = datetime.fromtimestamp(order.created_at / 1000, UTC).isoformat(timespec="milliseconds")
    rows = [
        ("order id", order.order_id),
        ("client id", order.client_order_id),
        ("symbol", order.symbol),
        ("side", pb.OrderSide.Name(order.side)),
        ("type", pb.OrderType.Name(order.type)),
        ("quantity", order.quantity),
        ("price", order.price or "-"),
        ("time in force", pb.TimeInForce.Name(order.time_in_force)),
        ("state", pb.OrderState.Name(order.state)),
        ("filled", order.filled_quantity),
        ("average price", order.average_price),
        ("fee", f"{order.fee} {order.fee_asset}".strip()),
        ("exchange id", order.exchange_order_id or "-"),
        ("created", created),
        ("version", str(order.version)),
    ]
    if order.reject_reason:
        rows.append(("reason", order.reject_reason))
    for fill in order.fills:
        role = "maker" if fill.maker else "taker"
        rows.append(
            (
                "fill",
                f"{fill.quantity} @ {fill.price}, fee {fill.fee} {fill.fee_asset}, {role}, "
                f"trade {fill.trade_id}",
            )
        )
    return "\n".join(f"  {name:<14} {value}" for name, value in rows)


_COMMANDS = {"create": _create, "get": _get, "cancel": _cancel, "list": _list, "watch": _watch}

__all__ = ["add_order_commands", "run_order_command"]
