"""What the exchange's reports do to a conditional order, whatever order they arrive in."""

from __future__ import annotations

from decimal import Decimal

from order_execution.orders import fsm
from order_execution.orders.fsm import ExchangeReport
from order_execution.orders.model import Fill, Order, OrderState, OrderType
from tests import factories

S = OrderState


def stop(state: OrderState = S.SUBMITTING) -> Order:
    return factories.make_order(
        type=OrderType.STOP_MARKET, price=None, time_in_force=None, trigger_price=Decimal(49000), state=state
    )


def apply(order: Order, *reports: ExchangeReport) -> Order:
    for report in reports:
        order = fsm.apply_report(order, report) or order
    return order


WAITING = ExchangeReport(S.WAITING_TRIGGER, algo_id="1000000001")
TRIGGERED = ExchangeReport(S.TRIGGERED, algo_id="1000000001", exchange_order_id="77")
FILL = Fill(trade_id="t1", quantity=Decimal("0.010"), price=Decimal(48900))
FILLED = ExchangeReport(
    S.FILLED,
    filled_quantity=Decimal("0.010"),
    average_price=Decimal(48900),
    exchange_order_id="77",
    fills=(FILL,),
)


def test_accepted_waits_then_triggers_then_fills() -> None:
    order = apply(stop(), WAITING)
    assert order.state is S.WAITING_TRIGGER and order.algo_id == "1000000001" and not order.exchange_order_id
    order = apply(order, TRIGGERED)
    assert order.state is S.TRIGGERED and order.exchange_order_id == "77"
    order = apply(order, FILLED)
    assert order.state is S.FILLED and fsm.is_settled(order) and order.algo_id == "1000000001"


def test_the_resulting_orders_fill_may_overtake_the_trigger_news() -> None:
    order = apply(stop(), WAITING, FILLED, TRIGGERED, WAITING)
    assert (
        order.state is S.FILLED
        and order.exchange_order_id == "77"
        and order.filled_quantity == Decimal("0.010")
    )


def test_a_late_acceptance_never_moves_a_triggered_order_back() -> None:
    order = apply(stop(), TRIGGERED, WAITING)
    assert order.state is S.TRIGGERED


def test_replaying_reports_changes_nothing() -> None:
    order = apply(stop(), WAITING, TRIGGERED)
    assert fsm.apply_report(order, WAITING) is None and fsm.apply_report(order, TRIGGERED) is None


def test_cancel_pending_stays_pending_while_the_order_waits_or_triggers() -> None:
    order = apply(stop(), WAITING)
    pending = fsm.transition(order, S.PENDING_CANCEL)
    assert pending is not None
    still = apply(pending, WAITING, TRIGGERED)
    assert still.state is S.PENDING_CANCEL and still.exchange_order_id == "77"
    assert apply(still, ExchangeReport(S.CANCELED, exchange_order_id="77")).state is S.CANCELED


def test_algo_rejection_on_trigger_is_final_with_reason() -> None:
    order = apply(stop(), WAITING, ExchangeReport(S.REJECTED, algo_id="1000000001", reason="no margin"))
    assert order.state is S.REJECTED and order.reject_reason == "no margin"


def test_a_local_rejection_is_overturned_by_the_algo_services_evidence() -> None:
    rejected = fsm.transition(stop(), S.REJECTED, reason="gave up")
    assert rejected is not None
    assert apply(rejected, WAITING).state is S.WAITING_TRIGGER


def test_unknown_send_settles_from_an_algo_query() -> None:
    unknown = fsm.transition(stop(), S.UNKNOWN)
    assert unknown is not None
    assert apply(unknown, WAITING).state is S.WAITING_TRIGGER


def test_amend_records_the_confirmed_terms_of_an_open_order_only() -> None:
    order = factories.make_order(state=S.SUBMITTED)
    amended = fsm.amend(order, price=Decimal(49000), quantity=Decimal("0.02"))
    assert amended is not None and amended.price == Decimal(49000) and amended.quantity == Decimal("0.02")
    assert fsm.amend(order, price=order.price or Decimal(0), quantity=order.quantity) is None
    assert fsm.amend(order.replace(state=S.FILLED), price=Decimal(1), quantity=Decimal(1)) is None
