"""What the exchange's reports do to an order, whatever order they arrive in and however often.

Each test is a sequence of news (the worker's REST answers, user-stream events, the reconciler's
queries, read by the service's own parsers) and of the service's own decisions (claim, cancel
request, UNKNOWN, giving up), and checks the order that results: its state, what traded, and
that a move which cannot happen is refused and leaves the order as it was. Nothing here compares
against a copy of `fsm.TRANSITIONS`; two properties (hypothesis) check the rules over arbitrary
sequences. Conditional orders have more cases in test_fsm_conditional.py.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from order_execution.orders import fsm
from order_execution.orders.model import Order, OrderState
from tests.unit.exchange_reports import (
    ACKED,
    ALGO_ID,
    EXCHANGE_ID,
    FIRST_TRADE,
    HISTORIES,
    LAST_TRADE,
    T1,
    T2,
    History,
    Move,
    algo_canceled,
    algo_event,
    algo_reply,
    cancel_request,
    claim,
    event,
    limit_order,
    local,
    query,
    rest,
    run,
    stop_order,
)

S = OrderState
# Deterministic in CI; no deadline: the machine's two cores are shared with other work, and a
# slow example is not a failure (each takes well under a millisecond when the machine is free).
PROPERTY = settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


def refused(order: Order, move: Move) -> None:
    """`move` is refused: it changes nothing of `order`."""
    assert move.change(order) is None, f"{move} changed a {order.state} order"


def fill_ids(order: Order) -> list[str]:
    return [f.trade_id for f in order.fills]


# --- an order's life -----------------------------------------------------------------------


def test_claimed_acknowledged_then_filled_in_two_trades() -> None:
    order = run(limit_order(), claim())
    assert order.state is S.SUBMITTING
    order = run(order, ACKED)
    assert order.state is S.SUBMITTED and order.exchange_order_id == str(EXCHANGE_ID)
    order = run(order, FIRST_TRADE)
    assert order.state is S.PARTIALLY_FILLED and order.filled_quantity == Decimal("0.004")
    assert order.average_price == 50000 and order.fee == Decimal("0.08") and fill_ids(order) == ["501"]
    assert not fsm.is_settled(order)
    order = run(order, LAST_TRADE)
    assert order.state is S.FILLED and order.filled_quantity == Decimal("0.010")
    assert order.average_price == 49940 and order.fee == Decimal("0.20") and order.fee_asset == "USDT"
    assert fill_ids(order) == ["501", "502"] and fsm.is_settled(order)


def test_filled_in_the_post_answer_is_settled_once_its_trades_are_recorded() -> None:
    """A MARKET order's POST answer says FILLED before the stream brings the trades."""
    order = run(limit_order(S.SUBMITTING), rest("FILLED", "0.010", "49940"))
    assert order.state is S.FILLED and order.filled_quantity == Decimal("0.010") and order.fills == ()
    assert not fsm.is_settled(order)  # the reconciler still owes it its trades
    order = run(order, FIRST_TRADE)  # X=PARTIALLY_FILLED: recorded, and FILLED stays
    assert order.state is S.FILLED and fill_ids(order) == ["501"] and not fsm.is_settled(order)
    order = run(order, LAST_TRADE)
    assert order.state is S.FILLED and order.fee == Decimal("0.20") and fsm.is_settled(order)
    assert order.average_price == 49940 and order.filled_quantity == Decimal("0.010")


def test_the_fill_arriving_before_the_post_answer_wins() -> None:
    """The stream's FILLED beats the POST's answer; the stale acknowledgement is refused."""
    filled = run(limit_order(S.SUBMITTING), event("FILLED", cumulative="0.010", average="50000"))
    assert filled.state is S.FILLED and filled.filled_quantity == Decimal("0.010")
    refused(filled, ACKED)
    refused(filled, event("NEW"))


def test_an_older_partial_report_after_a_newer_one_is_refused() -> None:
    newer = run(limit_order(S.SUBMITTED), rest("PARTIALLY_FILLED", "0.006", "50000"))
    assert newer.state is S.PARTIALLY_FILLED and newer.filled_quantity == Decimal("0.006")
    refused(newer, rest("PARTIALLY_FILLED", "0.004", "50000"))
    refused(newer, event("NEW"))


def test_every_report_replayed_changes_nothing() -> None:
    history = (ACKED, event("NEW"), FIRST_TRADE, query("PARTIALLY_FILLED", "0.004", "50000", T1), LAST_TRADE)
    order = run(limit_order(S.SUBMITTING), *history)
    assert order.state is S.FILLED and fill_ids(order) == ["501", "502"]
    for move in history:
        refused(order, move)


def test_a_trade_from_the_stream_and_from_user_trades_is_recorded_once() -> None:
    order = run(limit_order(S.SUBMITTED), FIRST_TRADE, query("FILLED", "0.010", "49940", T1, T2))
    assert order.state is S.FILLED and fill_ids(order) == ["501", "502"] and order.fee == Decimal("0.20")
    refused(order, FIRST_TRADE)


def test_trades_read_after_the_order_object_may_be_ahead_of_it() -> None:
    """The reconciler reads the order, then its trades: a trade in between is counted, and the
    average price is the trades' (the order object's average is older)."""
    order = run(limit_order(S.SUBMITTED), query("PARTIALLY_FILLED", "0.004", "50000", T1, T2))
    assert order.state is S.PARTIALLY_FILLED and order.filled_quantity == Decimal("0.010")
    assert order.average_price == 49940 and order.fee == Decimal("0.20")
    assert run(order, LAST_TRADE).state is S.FILLED


# --- how it ends ---------------------------------------------------------------------------


def test_canceled_after_a_partial_fill_keeps_what_traded() -> None:
    order = run(limit_order(S.SUBMITTED), FIRST_TRADE, cancel_request())
    assert order.state is S.PENDING_CANCEL
    order = run(order, rest("CANCELED", "0.004", "50000"))  # DELETE's answer
    assert order.state is S.CANCELED and order.filled_quantity == Decimal("0.004") and fsm.is_settled(order)
    refused(order, event("CANCELED", cumulative="0.004", average="50000"))  # the stream says it too


def test_a_fill_that_trails_the_cancel_is_recorded_and_the_order_stays_canceled() -> None:
    canceled = run(limit_order(S.PENDING_CANCEL), rest("CANCELED", "0.002", "50000"))
    assert canceled.state is S.CANCELED and canceled.filled_quantity == Decimal("0.002")
    late = run(canceled, rest("PARTIALLY_FILLED", "0.003", "49990"))
    assert late.state is S.CANCELED and late.filled_quantity == Decimal("0.003")


def test_a_post_only_order_that_would_take_liquidity_expires_unfilled() -> None:
    order = run(limit_order(S.SUBMITTING, post_only=True), ACKED, event("EXPIRED"))
    assert order.state is S.EXPIRED and order.filled_quantity == 0 and fsm.is_settled(order)


@pytest.mark.parametrize("status", ["EXPIRED", "EXPIRED_IN_MATCH"])
def test_an_ioc_remainder_expires_with_its_partial_fill(status: str) -> None:
    order = run(
        limit_order(S.SUBMITTING), ACKED, FIRST_TRADE, event(status, cumulative="0.004", average="50000")
    )
    assert order.state is S.EXPIRED and order.filled_quantity == Decimal("0.004") and fsm.is_settled(order)


def test_a_rejection_is_final_and_says_why() -> None:
    by_exchange = run(limit_order(S.SUBMITTING), rest("REJECTED"))
    assert by_exchange.state is S.REJECTED and by_exchange.reject_reason == "exchange status REJECTED"
    refused(by_exchange, ACKED)
    refused(by_exchange, cancel_request())
    refused_by_error = run(limit_order(S.SUBMITTING), local(S.REJECTED, "HTTP 400 -4164: notional too small"))
    assert refused_by_error.state is S.REJECTED
    assert refused_by_error.reject_reason == "HTTP 400 -4164: notional too small"


def test_a_rejection_the_exchange_made_is_not_overturned_but_a_late_fill_is_recorded() -> None:
    rejected = limit_order(S.REJECTED, exchange_order_id=str(EXCHANGE_ID))
    moved = run(rejected, rest("FILLED", "0.010", "50000"))
    assert moved.state is S.REJECTED and moved.filled_quantity == Decimal("0.010")


# --- a cancel racing the order's news --------------------------------------------------------


def test_a_fill_while_the_cancel_is_pending_is_recorded_and_the_cancel_still_pending() -> None:
    pending = run(limit_order(S.SUBMITTED), cancel_request())
    assert pending.state is S.PENDING_CANCEL
    refused(pending, cancel_request())  # asked once; the worker's cancel message is on its way
    order = run(pending, FIRST_TRADE)
    assert order.state is S.PENDING_CANCEL and order.filled_quantity == Decimal("0.004")
    assert run(order, rest("CANCELED", "0.004", "50000")).state is S.CANCELED


def test_the_fill_wins_the_race_with_the_cancel() -> None:
    """The order fills before the cancel reaches it: DELETE answers -2011 and the query says FILLED."""
    order = run(limit_order(S.SUBMITTED), cancel_request(), FIRST_TRADE, LAST_TRADE)
    assert order.state is S.FILLED and order.filled_quantity == Decimal("0.010")
    refused(order, query("FILLED", "0.010", "49940", T1, T2))
    refused(order, cancel_request())


def test_a_cancel_asked_while_the_order_is_being_sent() -> None:
    pending = run(limit_order(S.SUBMITTING), cancel_request())
    assert pending.state is S.PENDING_CANCEL
    acked = run(pending, ACKED)  # the POST's answer comes after the cancel was asked
    assert acked.state is S.PENDING_CANCEL and acked.exchange_order_id == str(EXCHANGE_ID)
    assert run(acked, rest("CANCELED")).state is S.CANCELED
    # The exchange refused the create: the cancel has nothing left to do.
    rejected = run(pending, local(S.REJECTED, "HTTP 400 -2010: would immediately trigger"))
    assert rejected.state is S.REJECTED and rejected.reject_reason.startswith("HTTP 400 -2010")
    # It was never sent (too old): canceled, not expired.
    unsent = run(pending, local(S.CANCELED, "canceled before it reached the exchange"))
    assert unsent.state is S.CANCELED


def test_a_cancel_before_the_order_is_sent_cancels_it_at_once_and_it_is_never_sent() -> None:
    canceled = run(limit_order(S.NEW), cancel_request())
    assert canceled.state is S.CANCELED and canceled.reject_reason == "canceled before it was sent"
    refused(canceled, claim())
    refused(canceled, cancel_request())


def test_an_order_too_old_to_send_expires_and_is_never_sent() -> None:
    for start in (S.NEW, S.SUBMITTING):  # waited in the queue; refused before execution until too old
        expired = run(limit_order(start), local(S.EXPIRED, "over max_order_age_ms"))
        assert expired.state is S.EXPIRED and expired.reject_reason == "over max_order_age_ms"
        refused(expired, claim())


# --- UNKNOWN: the answer was lost -------------------------------------------------------------


@pytest.mark.parametrize(
    ("evidence", "state", "filled"),
    [
        (rest("NEW"), S.SUBMITTED, "0"),
        (query("FILLED", "0.010", "49940", T1, T2), S.FILLED, "0.010"),
        (FIRST_TRADE, S.PARTIALLY_FILLED, "0.004"),  # the stream got there first
        (rest("CANCELED", "0.004", "50000"), S.CANCELED, "0.004"),
        (rest("EXPIRED"), S.EXPIRED, "0"),
        (rest("REJECTED"), S.REJECTED, "0"),
    ],
    ids=lambda value: str(value),
)
def test_an_unknown_outcome_is_settled_by_what_the_exchange_says(
    evidence: Move, state: OrderState, filled: str
) -> None:
    unknown = run(limit_order(S.SUBMITTING), local(S.UNKNOWN, "timed out after 5000 ms"))
    assert unknown.state is S.UNKNOWN
    refused(unknown, claim())  # never sent twice: only evidence or the reconciler moves it
    order = run(unknown, evidence)
    assert order.state is state and order.filled_quantity == Decimal(filled)
    assert order.exchange_order_id == str(EXCHANGE_ID)


@pytest.mark.parametrize("unanswered", [S.SUBMITTING, S.UNKNOWN], ids=str)
def test_an_order_the_exchange_never_got_is_sent_again_only_by_a_new_claim(unanswered: OrderState) -> None:
    """SUBMITTING: its worker died mid-send; UNKNOWN: the answer was lost. Either way the
    reconciler found nothing at the exchange once it could no longer accept it, and queues it again
    (reconcile.unknown_not_found = resend)."""
    queued = run(limit_order(unanswered), local(S.NEW, "not placed; sending again"))
    assert queued.state is S.NEW and queued.reject_reason == "not placed; sending again"
    assert run(queued, ACKED).state is S.NEW  # news of it moves it no further while it waits to be sent
    resent = run(queued, claim())
    assert resent.state is S.SUBMITTING
    refused(resent, claim())


@pytest.mark.parametrize(
    ("evidence", "state"),
    [(algo_reply("NEW"), S.WAITING_TRIGGER), (algo_reply("TRIGGERED", actual_order=True), S.TRIGGERED)],
    ids=lambda value: str(value),
)
def test_an_unknown_stop_is_settled_by_the_algo_service(evidence: Move, state: OrderState) -> None:
    unknown = run(stop_order(), local(S.UNKNOWN, "HTTP 503: Unknown error"))
    order = run(unknown, evidence)
    assert order.state is state and order.algo_id == str(ALGO_ID)


def test_a_rejection_we_inferred_is_overturned_by_the_exchanges_evidence() -> None:
    """Given up as never placed; then the exchange reports it filled after all."""
    inferred = run(limit_order(S.SUBMITTING), local(S.UNKNOWN), local(S.REJECTED, "never placed"))
    assert inferred.state is S.REJECTED and not inferred.exchange_order_id
    order = run(inferred, rest("FILLED", "0.01", "50000"))
    assert order.state is S.FILLED and order.filled_quantity == Decimal("0.01")


# --- conditional orders and amendments ---------------------------------------------------------


def test_a_stop_waits_then_triggers_then_fills_through_the_order_it_placed() -> None:
    waiting = run(stop_order(), algo_reply("NEW"))
    assert waiting.state is S.WAITING_TRIGGER and waiting.algo_id == str(ALGO_ID)
    assert not waiting.exchange_order_id
    triggered = run(waiting, algo_event("TRIGGERED", actual_order=True))
    assert triggered.state is S.TRIGGERED and triggered.exchange_order_id == str(EXCHANGE_ID)
    refused(triggered, algo_reply("NEW"))  # a late answer of the POST never moves it back
    placed = run(triggered, event("NEW"))  # the order the trigger placed rests
    assert placed.state is S.SUBMITTED
    refused(placed, algo_event("TRIGGERING"))
    refused(placed, algo_event("NEW"))
    filled = run(triggered, query("FILLED", "0.010", "49940", T1, T2))  # the placed order, read by id
    assert filled.state is S.FILLED and fsm.is_settled(filled) and filled.algo_id == str(ALGO_ID)
    refused(filled, algo_event("FINISHED", actual_order=True))
    refused(filled, algo_reply("NEW"))


def test_a_stop_canceled_while_it_waits() -> None:
    pending = run(stop_order(), algo_reply("NEW"), cancel_request())
    assert pending.state is S.PENDING_CANCEL
    refused(pending, algo_event("NEW"))  # still waiting at the exchange: the cancel is still pending
    assert run(pending, algo_canceled()).state is S.CANCELED


def test_an_amendment_changes_the_terms_of_a_resting_order_once() -> None:
    amended_event = event("NEW", amended_to=("49900", "0.020"))
    order = run(limit_order(S.SUBMITTING), ACKED, amended_event)
    assert order.state is S.SUBMITTED and (order.price, order.quantity) == (Decimal(49900), Decimal("0.020"))
    refused(order, amended_event)
    partial = run(
        order, FIRST_TRADE, event("PARTIALLY_FILLED", amended_to=("49800", "0.020"), cumulative="0.004")
    )
    assert partial.state is S.PARTIALLY_FILLED and partial.price == 49800
    assert partial.filled_quantity == Decimal("0.004") and fill_ids(partial) == ["501"]
    filled = run(order, event("FILLED", cumulative="0.020", average="49900"))
    refused(filled, event("FILLED", amended_to=("49700", "0.020"), cumulative="0.020"))


# --- properties ------------------------------------------------------------------------------

# Every kind of news and decision, for the sequences the first property draws.
ANY_MOVE = [
    *(rest(status) for status in ("NEW", "CANCELED", "EXPIRED", "REJECTED")),
    rest("PARTIALLY_FILLED", "0.004", "50000"),
    rest("FILLED", "0.010", "49940"),
    query("FILLED", "0.010", "49940", T1, T2),
    event("NEW"),
    FIRST_TRADE,
    LAST_TRADE,
    event("CANCELED", cumulative="0.004", average="50000"),
    event("EXPIRED", cumulative="0.004", average="50000"),
    event("NEW", amended_to=("49900", "0.020")),
    *(algo_reply(status) for status in ("NEW", "CANCELED", "REJECTED")),
    algo_event("TRIGGERED", actual_order=True),
    algo_event("FINISHED", actual_order=True),
    algo_canceled(),
    *(local(state, "decided here") for state in OrderState),
    claim(),
    cancel_request(),
]


def _our_inferred_rejection(order: Order) -> bool:
    """REJECTED by us without the exchange ever naming the order: evidence may overturn it."""
    return order.state is S.REJECTED and not order.exchange_order_id and not order.algo_id


@PROPERTY
@given(
    start=st.sampled_from(OrderState),
    known=st.booleans(),
    moves=st.lists(st.sampled_from(ANY_MOVE), max_size=12),
)
def test_no_sequence_moves_a_final_order_out_of_its_state_or_loses_a_fill(
    start: OrderState, known: bool, moves: list[Move]
) -> None:
    """From any state, any news and decisions: what traded only grows, each trade is recorded
    once and its fee counted once, and a final state stays (unless it is a rejection we inferred)."""
    order = limit_order(start, exchange_order_id=str(EXCHANGE_ID) if known else "")
    for move in moves:
        after = move.change(order) or order
        assert after.filled_quantity >= order.filled_quantity, move
        assert set(fill_ids(order)) <= set(fill_ids(after)), move
        assert len(set(fill_ids(after))) == len(after.fills), move
        assert after.fee == sum((f.fee for f in after.fills), Decimal(0)), move
        if order.state in fsm.FINAL_STATES and not _our_inferred_rejection(order):
            assert after.state is order.state, move
        order = after


def _outcome(order: Order) -> tuple[object, ...]:
    return (
        order.state,
        order.filled_quantity,
        order.average_price,
        order.fee,
        order.fee_asset,
        sorted(fill_ids(order)),
        order.exchange_order_id,
        order.algo_id,
        order.reject_reason,
        fsm.is_settled(order),
    )


@pytest.mark.parametrize("history", HISTORIES, ids=repr)
def test_each_history_in_its_own_order_ends_as_expected(history: History) -> None:
    order = run(history.start, *history.news)
    assert order.state is history.state and order.filled_quantity == Decimal(history.filled)
    assert fsm.is_settled(order)


# How far an order has come: news never moves it to an earlier stage. A cancel asked is past
# every live state (news of the order still live leaves it waiting), and a final state is last.
STAGE = {
    S.NEW: 0,
    S.SUBMITTING: 1,
    S.UNKNOWN: 1,
    S.WAITING_TRIGGER: 2,
    S.TRIGGERED: 3,
    S.SUBMITTED: 4,
    S.PARTIALLY_FILLED: 5,
    S.PENDING_CANCEL: 6,
    **dict.fromkeys(fsm.FINAL_STATES, 7),
}


@PROPERTY
@given(st.data())
def test_a_history_in_any_order_and_with_repeats_ends_the_same(data: st.DataObject) -> None:
    """Whatever order the news arrives in, repeated or not, and whether the POST's answer came
    (SUBMITTING) or was lost (UNKNOWN): the order never goes back a stage and ends the same."""
    history = data.draw(st.sampled_from(HISTORIES), label="history")
    sent = data.draw(st.sampled_from([S.SUBMITTING, S.UNKNOWN]), label="sent")
    repeats = data.draw(st.lists(st.sampled_from(history.news), max_size=4), label="repeats")
    arrival = data.draw(st.permutations(history.news + tuple(repeats)), label="arrival")
    start = history.start.replace(state=sent)
    order = start
    for move in arrival:
        after = run(order, move)
        assert STAGE[after.state] >= STAGE[order.state], f"{move} moved {order.state} back to {after.state}"
        order = after
    assert _outcome(order) == _outcome(run(start, *history.news))
