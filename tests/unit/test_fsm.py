"""The state machine's table and the rules for applying exchange news."""

from __future__ import annotations

from decimal import Decimal

import pytest

from orders import fsm
from orders.model import Order, OrderState
from tests import factories

S = OrderState


def make_order(state: OrderState = S.NEW, filled: str = "0") -> Order:
    return factories.make_order(state=state, filled_quantity=Decimal(filled))


EXPECTED = {
    S.NEW: {S.SUBMITTING, S.CANCELED, S.EXPIRED, S.REJECTED},
    S.SUBMITTING: {
        S.SUBMITTED,
        S.PARTIALLY_FILLED,
        S.FILLED,
        S.CANCELED,
        S.EXPIRED,
        S.REJECTED,
        S.UNKNOWN,
        S.PENDING_CANCEL,
        S.NEW,  # never placed: queued to be sent again
        S.WAITING_TRIGGER,  # a conditional order accepted by the algo service
        S.TRIGGERED,
    },
    S.SUBMITTED: {S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED, S.PENDING_CANCEL},
    S.PARTIALLY_FILLED: {S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED, S.PENDING_CANCEL},
    S.PENDING_CANCEL: {S.SUBMITTED, S.FILLED, S.CANCELED, S.EXPIRED, S.REJECTED},
    S.UNKNOWN: {
        S.SUBMITTED,
        S.PARTIALLY_FILLED,
        S.FILLED,
        S.CANCELED,
        S.EXPIRED,
        S.REJECTED,
        S.PENDING_CANCEL,
        S.NEW,
        S.WAITING_TRIGGER,
        S.TRIGGERED,
    },
    S.WAITING_TRIGGER: {
        S.TRIGGERED,
        S.SUBMITTED,
        S.PARTIALLY_FILLED,
        S.FILLED,
        S.CANCELED,
        S.EXPIRED,
        S.REJECTED,
        S.PENDING_CANCEL,
    },
    S.TRIGGERED: {
        S.SUBMITTED,
        S.PARTIALLY_FILLED,
        S.FILLED,
        S.CANCELED,
        S.EXPIRED,
        S.REJECTED,
        S.PENDING_CANCEL,
    },
    S.FILLED: set(),
    S.CANCELED: set(),
    S.REJECTED: set(),
    S.EXPIRED: set(),
}


@pytest.mark.parametrize("source", list(OrderState))
@pytest.mark.parametrize("target", list(OrderState))
def test_transition_table(source: OrderState, target: OrderState) -> None:
    allowed = target in EXPECTED[source]
    assert fsm.can_transition(source, target) is allowed
    moved = fsm.transition(make_order(source), target)
    assert (moved is not None) is allowed
    if moved is not None:
        assert moved.state is target


def test_every_state_has_a_row() -> None:
    assert set(fsm.TRANSITIONS) == set(OrderState)


def test_stale_ack_after_fill_does_not_move_backwards() -> None:
    filled = make_order(S.FILLED, filled="0.010")
    assert fsm.apply_report(filled, fsm.ExchangeReport(S.SUBMITTED)) is None


def test_partial_fill_report_after_full_fill_is_ignored() -> None:
    partial = make_order(S.PARTIALLY_FILLED, filled="0.006")
    assert fsm.apply_report(partial, fsm.ExchangeReport(S.PARTIALLY_FILLED, Decimal("0.004"))) is None


def test_fills_only_grow_and_replay_is_a_no_op() -> None:
    order = make_order(S.SUBMITTED)
    report = fsm.ExchangeReport(S.PARTIALLY_FILLED, Decimal("0.004"), Decimal("50000"), "77")
    once = fsm.apply_report(order, report)
    assert once is not None and once.state is S.PARTIALLY_FILLED and once.filled_quantity == Decimal("0.004")
    assert fsm.apply_report(once, report) is None


def test_late_fill_after_cancel_is_recorded_but_state_stays() -> None:
    canceled = make_order(S.CANCELED, filled="0.002")
    late = fsm.apply_report(
        canceled, fsm.ExchangeReport(S.PARTIALLY_FILLED, Decimal("0.003"), Decimal("49990"))
    )
    assert late is not None
    assert late.state is S.CANCELED
    assert late.filled_quantity == Decimal("0.003")


def test_fill_while_cancel_pending_keeps_pending_cancel() -> None:
    pending = make_order(S.PENDING_CANCEL)
    updated = fsm.apply_report(pending, fsm.ExchangeReport(S.PARTIALLY_FILLED, Decimal("0.001")))
    assert updated is not None
    assert updated.state is S.PENDING_CANCEL
    assert updated.filled_quantity == Decimal("0.001")
    assert fsm.apply_report(updated, fsm.ExchangeReport(S.CANCELED, Decimal("0.001"))).state is S.CANCELED  # type: ignore[union-attr]


def test_fill_arriving_before_rest_reply_wins() -> None:
    submitting = make_order(S.SUBMITTING)
    filled = fsm.apply_report(
        submitting, fsm.ExchangeReport(S.FILLED, Decimal("0.010"), Decimal("50000"), "5")
    )
    assert filled is not None and filled.state is S.FILLED
    assert fsm.apply_report(filled, fsm.ExchangeReport(S.SUBMITTED, exchange_order_id="5")) is None


def test_rejection_records_reason() -> None:
    rejected = fsm.apply_report(
        make_order(S.SUBMITTING), fsm.ExchangeReport(S.REJECTED, reason="exchange status REJECTED")
    )
    assert rejected is not None and rejected.reject_reason == "exchange status REJECTED"


def test_exchange_evidence_overturns_a_rejection_we_inferred() -> None:
    """We gave it up (never seen at the exchange); then the exchange reports it filled."""
    inferred = make_order(S.REJECTED).replace(reject_reason="never placed")
    report = fsm.ExchangeReport(S.FILLED, Decimal("0.01"), Decimal("50000"), exchange_order_id="99")
    moved = fsm.apply_report(inferred, report)
    assert moved is not None and moved.state is S.FILLED and moved.filled_quantity == Decimal("0.01")


def test_an_exchange_rejection_is_not_overturned() -> None:
    """An order the exchange knew (it has an exchange id) keeps its final state; a late fill is recorded."""
    rejected = make_order(S.REJECTED).replace(exchange_order_id="99")
    report = fsm.ExchangeReport(S.FILLED, Decimal("0.01"), Decimal("50000"), exchange_order_id="99")
    moved = fsm.apply_report(rejected, report)
    assert moved is not None and moved.state is S.REJECTED  # the late fill is recorded, the state stays
