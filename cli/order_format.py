"""How the CLI shows orders: aligned text for a person, JSON objects for scripts.

Text: every time as ISO 8601 with its zone offset, fills with price, quantity and fee,
"-" for what does not apply (a MARKET order's price and time in force, no fee yet).
JSON: the proto's field names; enums as their names (null when unset, e.g. a MARKET
order's time_in_force); Unix-millisecond times and versions as numbers, with an
`*_iso` twin for each time. The exchange account is always in the JSON; the text shows it
only when it is not `default` (the one account of a single-account deployment).
"""

from __future__ import annotations

from typing import Any

from order_execution.cli.times import format_ms
from order_execution.proto import order_pb2 as pb

_TIME_FIELDS = ("created_at", "updated_at")
_DEFAULT_ACCOUNT = "default"  # a single-account deployment's account; not worth a word in text


def order_json(order: pb.Order) -> dict[str, Any]:
    """`order` as a JSON-ready dict (see the module docstring)."""
    return {
        "order_id": order.order_id,
        "client_order_id": order.client_order_id,
        "user_id": order.user_id,
        "symbol": order.symbol,
        "side": _enum(pb.OrderSide, order.side),
        "type": _enum(pb.OrderType, order.type),
        "state": _enum(pb.OrderState, order.state),
        "time_in_force": _enum(pb.TimeInForce, order.time_in_force),
        "quantity": order.quantity,
        "price": order.price or None,
        "filled_quantity": order.filled_quantity or "0",
        "average_price": order.average_price or None,
        "fee": order.fee or None,
        "fee_asset": order.fee_asset or None,
        "reduce_only": order.reduce_only,
        "post_only": order.post_only,
        "exchange_order_id": order.exchange_order_id or None,
        "version": order.version,
        "reject_reason": order.reject_reason or None,
        "trigger_price": order.trigger_price or None,
        "working_type": _enum(pb.WorkingType, order.working_type),
        "price_protect": order.price_protect,
        "close_position": order.close_position,
        "callback_rate": order.callback_rate or None,
        "activation_price": order.activation_price or None,
        "algo_id": order.algo_id or None,
        "account": order.account or _DEFAULT_ACCOUNT,
        **{name: getattr(order, name) for name in _TIME_FIELDS},
        **{f"{name}_iso": format_ms(getattr(order, name)) for name in _TIME_FIELDS},
        "fills": [fill_json(fill) for fill in order.fills],
    }


def fill_json(fill: pb.Fill) -> dict[str, Any]:
    """One trade as a JSON-ready dict."""
    return {
        "trade_id": fill.trade_id,
        "price": fill.price,
        "quantity": fill.quantity,
        "fee": fill.fee,
        "fee_asset": fill.fee_asset,
        "maker": fill.maker,
        "time": fill.time,
        "time_iso": format_ms(fill.time),
    }


def update_json(update: pb.OrderUpdate) -> dict[str, Any]:
    """One stream update as a JSON-ready dict (`fills`: the trades this update recorded)."""
    return {
        "update_type": update.update_type,
        "timestamp": update.timestamp,
        "timestamp_iso": format_ms(update.timestamp),
        "resume_token": update.resume_token,
        "order": order_json(update.order),
        "fills": [fill_json(fill) for fill in update.fills],
    }


def order_line(order: pb.Order, *, update_type: str = "", fills: list[pb.Fill] | None = None) -> str:
    """One line for `list` and `watch`: when, what, its state, and what was filled at what cost."""
    state = pb.OrderState.Name(order.state)
    kind = f" [{update_type}]" if update_type and update_type != state else ""
    parts = [
        format_ms(order.updated_at or order.created_at),
        order.order_id,
        *([f"[{order.account}]"] if _shown_account(order) else []),
        order.symbol,
        pb.OrderSide.Name(order.side),
        order.quantity,
        f"@ {order.price or 'MARKET'}",
        f"{state}{kind}",
    ]
    if _nonzero(order.filled_quantity):
        parts.append(f"filled {order.filled_quantity} avg {order.average_price or '-'}")
        parts.append(f"fee {_fee(order.fee, order.fee_asset)}")
    for fill in fills or ():
        parts.append(f"trade {fill.quantity} @ {fill.price}")
    parts.append(f"v{order.version}")
    if order.reject_reason:
        parts.append(f"({order.reject_reason})")
    return " ".join(parts)


def order_text(order: pb.Order) -> str:
    """Every field of `order` as aligned "name value" rows, one fill per row."""
    is_limit = order.type == pb.LIMIT
    flags = [name for name, on in (("reduce-only", order.reduce_only), ("post-only", order.post_only)) if on]
    rows = [
        ("order id", order.order_id),
        *([("account", order.account)] if _shown_account(order) else []),
        ("client id", order.client_order_id or "-"),
        ("user", order.user_id or "-"),
        ("symbol", order.symbol),
        ("side", pb.OrderSide.Name(order.side)),
        ("type", pb.OrderType.Name(order.type)),
        ("quantity", order.quantity),
        ("price", order.price if is_limit and order.price else "-"),
        ("time in force", _enum(pb.TimeInForce, order.time_in_force) or "-"),
        ("flags", ", ".join(flags) or "-"),
        ("state", pb.OrderState.Name(order.state)),
        ("filled", f"{order.filled_quantity or '0'} of {order.quantity}"),
        ("average price", order.average_price if _nonzero(order.average_price) else "-"),
        ("fee", _fee(order.fee, order.fee_asset)),
        ("exchange id", order.exchange_order_id or "-"),
        ("created", format_ms(order.created_at)),
        ("updated", format_ms(order.updated_at)),
        ("version", str(order.version)),
    ]
    if order.reject_reason:
        rows.append(("reason", order.reject_reason))
    for fill in order.fills:
        role = "maker" if fill.maker else "taker"
        rows.append(
            (
                "fill",
                f"{fill.quantity} @ {fill.price}, fee {_fee(fill.fee, fill.fee_asset)}, {role}, "
                f"trade {fill.trade_id}, {format_ms(fill.time)}",
            )
        )
    return "\n".join(f"  {name:<14} {value}" for name, value in rows)


def _shown_account(order: pb.Order) -> bool:
    """Whether the text names the order's account: any but `default` (and an older gateway's none)."""
    return order.account not in ("", _DEFAULT_ACCOUNT)


def _enum(kind: Any, value: int) -> str | None:
    """The enum's name, None for its UNSPECIFIED zero value."""
    return str(kind.Name(value)) if value else None


def _nonzero(decimal_text: str) -> bool:
    return bool(decimal_text) and decimal_text.strip("0.") != ""


def _fee(amount: str, asset: str) -> str:
    return f"{amount} {asset}".strip() if _nonzero(amount) else "-"
