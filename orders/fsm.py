"""The order state machine: which state may follow which, and how news is applied.

News about an order arrives from several places (the worker's REST reply, the
user-data stream, the reconciler) and in any order. The rules here make applying it
safe whatever the order of arrival:

* a move not in `TRANSITIONS` is ignored, so stale news (an ACK that lands after
  the fill) never moves an order backwards;
* filled quantity only grows, so replaying a report changes nothing;
* a final state keeps its state but still takes a late fill (a fill can trail a cancel);
* while a cancel is pending, fills are recorded but the order stays PENDING_CANCEL
  until the exchange says how it ended;
* a fill is recorded once per trade id; the fee is the sum of the recorded fills';
* evidence beats inference: an order we marked REJECTED ourselves (the exchange never
  showed it) takes the exchange's state if the exchange later reports it after all.

Conditional orders (STOP*, TAKE_PROFIT*, TRAILING_STOP_MARKET) go NEW -> SUBMITTING ->
WAITING_TRIGGER (the exchange's algo service holds it) -> TRIGGERED (it fired and placed
its resulting order) -> the resulting order's states (SUBMITTED, PARTIALLY_FILLED,
FILLED...). News of the resulting order may overtake the trigger news, so every state
after WAITING_TRIGGER may follow it directly; a report of an earlier stage never moves
an order back. The algo id and the resulting order's id are kept from whichever report
brings them first.

An order is *settled* when its state is final and every fill of its filled quantity is
recorded; until then something (worker, listener, reconciler) still owes it news.

Functions return the new `Order`, or None when the news changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from order_execution.orders.model import Fill, Order, OrderState, now_ms

S = OrderState

FINAL_STATES: frozenset[OrderState] = frozenset({S.FILLED, S.CANCELED, S.REJECTED, S.EXPIRED})

_EXCHANGE_OUTCOMES = frozenset({S.SUBMITTED, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED})
# What the resulting order of a fired conditional order can report.
_AFTER_TRIGGER = frozenset(
    {S.SUBMITTED, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED, S.REJECTED, S.PENDING_CANCEL}
)
_CONDITIONAL = frozenset({S.WAITING_TRIGGER, S.TRIGGERED})
# Reports that leave a PENDING_CANCEL order waiting: the order is still live at the exchange.
_STILL_LIVE = frozenset({S.SUBMITTED, S.PARTIALLY_FILLED, S.WAITING_TRIGGER, S.TRIGGERED})

TRANSITIONS: dict[OrderState, frozenset[OrderState]] = {
    S.NEW: frozenset({S.SUBMITTING, S.CANCELED, S.EXPIRED, S.REJECTED}),
    # NEW (from SUBMITTING or UNKNOWN): the exchange never got it, so it is queued to be sent
    # once more with the same client id (reconcile.unknown_not_found = resend).
    S.SUBMITTING: _EXCHANGE_OUTCOMES | _CONDITIONAL | {S.REJECTED, S.UNKNOWN, S.PENDING_CANCEL, S.NEW},
    S.SUBMITTED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED, S.PENDING_CANCEL}),
    S.PARTIALLY_FILLED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED, S.PENDING_CANCEL}),
    # REJECTED: the cancel was asked for while the create was in flight and the create failed.
    S.PENDING_CANCEL: frozenset({S.SUBMITTED, S.FILLED, S.CANCELED, S.EXPIRED, S.REJECTED}),
    S.UNKNOWN: _EXCHANGE_OUTCOMES | _CONDITIONAL | {S.REJECTED, S.PENDING_CANCEL, S.NEW},
    S.WAITING_TRIGGER: _AFTER_TRIGGER | {S.TRIGGERED},
    S.TRIGGERED: _AFTER_TRIGGER,
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
    fills: tuple[Fill, ...] = ()
    algo_id: str = ""  # a conditional order's algoId (algo-service reports only)


def is_settled(order: Order) -> bool:
    """Final, and every fill of the filled quantity recorded: nothing more is owed to this order."""
    return order.state in FINAL_STATES and recorded_quantity(order) >= order.filled_quantity


def claim_live_until(order: Order, *, max_order_age_ms: int, request_timeout_ms: int) -> int:
    """Until when (Unix ms) the worker that claimed `order` may still be sending it.

    A live worker starts its POST before the order's age limit (it may wait for the rate
    budget until then, and re-stamps `sent_at` when it starts) and has its answer within
    the request timeout after. Until then a SUBMITTING order must not be taken for dead.
    """
    return max(order.sent_at, order.created_at + max_order_age_ms) + request_timeout_ms


def recorded_quantity(order: Order) -> Decimal:
    """The quantity of the fills recorded so far."""
    return sum((f.quantity for f in order.fills), Decimal(0))


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
    known = {f.trade_id for f in order.fills}
    new_fills = tuple(f for f in report.fills if f.trade_id not in known)
    fills = order.fills + new_fills
    recorded = sum((f.quantity for f in fills), Decimal(0))
    filled = max(order.filled_quantity, report.filled_quantity, recorded)
    fills_grew = filled > order.filled_quantity
    exchange_id = order.exchange_order_id or report.exchange_order_id
    algo_id = order.algo_id or report.algo_id

    state = order.state
    if _overturns_local_verdict(order, report) or report_moves(order.state, report.state):
        state = report.state

    if (
        state is order.state
        and not fills_grew
        and not new_fills
        and exchange_id == order.exchange_order_id
        and algo_id == order.algo_id
    ):
        return None
    return order.replace(
        state=state,
        filled_quantity=filled,
        average_price=_average_price(order, report, fills, filled, fills_grew),
        fee=sum((f.fee for f in fills), Decimal(0)),
        fee_asset=fills[-1].fee_asset if fills else order.fee_asset,
        fills=fills,
        exchange_order_id=exchange_id,
        algo_id=algo_id,
        reject_reason=report.reason if state is S.REJECTED else order.reject_reason,
        updated_at=now_ms(),
    )


def report_moves(current: OrderState, reported: OrderState) -> bool:
    """Whether a report of `reported` moves an order in `current` there (unless it overturns our
    own verdict, `_overturns_local_verdict`): never out of a final state (only a late fill is
    recorded), not while a cancel is pending and the report says the order is still live (the
    cancel's outcome is awaited), else as `TRANSITIONS` allows."""
    if current in FINAL_STATES:
        return False
    if current is S.PENDING_CANCEL and reported in _STILL_LIVE:
        return False
    return reported is not current and can_transition(current, reported)


def _overturns_local_verdict(order: Order, report: ExchangeReport) -> bool:
    """We gave the order up as REJECTED without an exchange id, but the exchange has it."""
    return (
        order.state is S.REJECTED
        and not order.exchange_order_id
        and not order.algo_id
        and bool(report.exchange_order_id or report.algo_id)
        and report.state is not S.REJECTED
    )


def _average_price(
    order: Order, report: ExchangeReport, fills: tuple[Fill, ...], filled: Decimal, grew: bool
) -> Decimal:
    if grew and report.average_price and report.filled_quantity == filled:
        return report.average_price
    recorded = sum((f.quantity for f in fills), Decimal(0))
    if recorded and recorded == filled:
        return sum((f.quantity * f.price for f in fills), Decimal(0)) / recorded
    return order.average_price


def amend(order: Order, *, price: Decimal, quantity: Decimal) -> Order | None:
    """Record an amendment the exchange confirmed (new limit price and quantity) of an order
    still open; None if it is final or nothing changes."""
    if order.state in FINAL_STATES or (order.price == price and order.quantity == quantity):
        return None
    return order.replace(price=price, quantity=quantity, updated_at=now_ms())
