"""Which position-side parameters an order carries, for the account's position mode.

One-way mode (Binance's default): no ``positionSide`` (the exchange takes ``BOTH``) and ``reduceOnly`` as
the order says. Hedge mode: ``positionSide`` is required and ``reduceOnly`` is refused (-1106); the side
follows from the order: BUY opens LONG, SELL opens SHORT, a reduce-only SELL closes LONG and a
reduce-only BUY closes SHORT, unless the order names its ``position_side`` itself.
"""

from __future__ import annotations

from order_execution.orders.model import Order, Side

POSITION_SIDE_MISMATCH = -4061  # "Order's position side does not match user's setting."


def hedge_position_side(order: Order) -> str:
    """``LONG`` or ``SHORT``: the hedge-mode side ``order`` opens or (reduce-only) closes."""
    if order.position_side:
        return order.position_side
    buys = order.side is Side.BUY
    return ("SHORT" if buys else "LONG") if order.reduce_only else ("LONG" if buys else "SHORT")


def position_params(order: Order, *, hedge_mode: bool) -> list[tuple[str, str]]:
    """The ``reduceOnly`` / ``positionSide`` request parameters of ``order`` in the given mode."""
    if hedge_mode:
        return [("positionSide", hedge_position_side(order))]
    return [("reduceOnly", "true")] if order.reduce_only else []
