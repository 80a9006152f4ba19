"""The order state machine: which state may follow which, and how news is applied.

News about an order arrives from several places (the worker's REST reply, the
user-data stream, the reconciler) and in any order. The rules here make applying it
safe whatever the order of arrival:

* a move not in `TRANSITIONS` is ignored, so stale news (an ACK that lands after
  the fill) never moves an order backwards;
* filled quantity only grows, so replaying a report changes nothing;
* a final state keeps its state but still takes a late fill (a fill can trail a cancel);
* while a cancel is pending, fills are recorded but the order stays PENDING_CANCEL
  until the exchange says how it ended.

Functions return the new `Order`, or None when the news changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from orders.model import Order, OrderState, now_ms

S = OrderState

FINAL_STATES: frozenset[OrderState] = frozenset({S.FILLED, S.CANCELED, S.REJECTED, S.EXPIRED})

_EXCHANGE_OUTCOMES = frozenset({S.SUBMITTED, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED})

TRANSITIONS: dict[OrderState, frozenset[OrderState]] = {
    S.NEW: frozenset({S.SUBMITTING, S.CANCELED, S.EXPIRED, S.REJECTED}),
    S.SUBMITTING: _EXCHANGE_OUTCOMES | {S.REJECTED, S.UNKNOWN, S.PENDING_CANCEL},
    S.SUBMITTED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED, S.PENDING_CANCEL}),
    S.PARTIALLY_FILLED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED, S.PENDING_CANCEL}),
    # REJECTED: the cancel was asked for while the create was in flight and the create failed.
    S.PENDING_CANCEL: frozenset({S.SUBMITTED, S.FILLED, S.CANCELED, S.EXPIRED, S.REJECTED}),
    S.UNKNOWN: _EXCHANGE_OUTCOMES | {S.REJECTED, S.PENDING_CANCEL},
    S.FILLED: frozenset(),
    S.CANCELED: frozenset(),
    S.REJECTED: frozenset(),
    S.EXPIRED: frozenset(),
}


def can_transition(source: OrderState, target: OrderState) -> bool:
    """True when `target` may directly follow `source`."""
    return target in TRANSITIONS[source]


@dataclass(frozen=True, slots=True)
class ExchangeReport:
    """What the exchange says about an order at one moment.

    `filled_quantity` is cumulative (Binance's executedQty / `z`), so reports can be
    applied in any order and more than once.
    """

    state: OrderState
    filled_quantity: Decimal = Decimal(0)
    average_price: Decimal = Decimal(0)
    exchange_order_id: str = ""
    reason: str = ""


def transition(order: Order, target: OrderState, *, reason: str = "") -> Order | None:
    """Move `order` to `target` for a local decision (claim, local cancel, expiry...).

    Returns None if the table does not allow the move from the order's current state.
    """
    if not can_transition(order.state, target):
        return None
    return order.replace(
        state=target,
        reject_reason=reason or order.reject_reason,
        updated_at=now_ms(),
    )


def apply_report(order: Order, report: ExchangeReport) -> Order | None:
    """Apply exchange news to `order`; see the module docstring for the rules."""
    filled = max(order.filled_quantity, report.filled_quantity)
    fills_grew = filled > order.filled_quantity
    average = report.average_price if fills_grew and report.average_price else order.average_price
    exchange_id = order.exchange_order_id or report.exchange_order_id

    state = order.state
    if order.state in FINAL_STATES:
        pass  # a final state stays; only a late fill is recorded
    elif order.state is S.PENDING_CANCEL and report.state in (S.SUBMITTED, S.PARTIALLY_FILLED):
        pass  # still waiting for the cancel's outcome
    elif report.state is not order.state and can_transition(order.state, report.state):
        state = report.state

    if state is order.state and not fills_grew and exchange_id == order.exchange_order_id:
        return None
    return order.replace(
        state=state,
        filled_quantity=filled,
        average_price=average,
        exchange_order_id=exchange_id,
        reject_reason=report.reason if state is S.REJECTED else order.reject_reason,
        updated_at=now_ms(),
    )
