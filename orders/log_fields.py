"""The fields every log line about an order carries: `extra=order_fields(order)`.

`runtime.logs` puts them in the JSON object (or appends them as `key=value` in text).
"""

from __future__ import annotations

from order_execution.orders.model import Order


def order_fields(order: Order) -> dict[str, str]:
    """The fields every log line about `order` carries, for `extra=`."""
    return {"order_id": order.order_id, "client_order_id": order.client_order_id, "symbol": order.symbol}


def order_ref(order_id: str, client_order_id: str = "", symbol: str = "") -> dict[str, str]:
    """`order_fields` for when only some of them are at hand (missing ones are left out)."""
    fields = {"order_id": order_id, "client_order_id": client_order_id, "symbol": symbol}
    return {name: value for name, value in fields.items() if value}
