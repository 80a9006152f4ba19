"""The chaos test's checker on hand-made records: it must count every kind of fault it claims to,
for one account and per account (each order against its own account's record).

And the gateway kill's accounting of the CreateOrder calls around it (`ride_through`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from tests.chaos.by_account import account_line, total, verify_by_account
from tests.chaos.gateway_kill import GatewayOutage, ride_through
from tests.chaos.verify import FillView, OrderView, StreamEvent, StreamRecord, verify
from tests.chaos.workload import CreateCall

pytestmark = pytest.mark.chaos
P = "t-"


def sim_order(cid: str, oid: int, status: str, executed: str) -> dict[str, Any]:
    return {"clientOrderId": cid, "orderId": oid, "status": status, "executedQty": executed}


def trade(cid: str, oid: int, tid: int, qty: str, fee: str) -> dict[str, Any]:
    return {"clientOrderId": cid, "orderId": oid, "id": tid, "qty": qty, "commission": fee}


def view(cid: str, state: str, filled: str = "0", fee: str = "0", version: int = 3, **kw: Any) -> OrderView:
    fills = tuple(FillView(t, Decimal(q), Decimal(f)) for t, q, f in kw.get("fills", ()))
    return OrderView(f"id-{cid}", cid, "BTCUSDT", state, Decimal(filled), Decimal(fee), version, fills)


def good_world() -> tuple[
    dict[str, str | None], dict[str, OrderView | None], list[Any], list[Any], list[StreamEvent]
]:
    accepted: dict[str, str | None] = {"t-1": "id-t-1", "t-2": "id-t-2", "t-3": "id-t-3"}
    service: dict[str, OrderView | None] = {
        "t-1": view(
            "t-1", "FILLED", "0.003", "0.075", fills=[("11", "0.002", "0.05"), ("12", "0.001", "0.025")]
        ),
        "t-2": view("t-2", "SUBMITTED", version=1),
        "t-3": view("t-3", "REJECTED", version=2),  # never reached the exchange
    }
    sims = [sim_order("t-1", 1, "FILLED", "0.003"), sim_order("t-2", 2, "NEW", "0.000")]
    trades = [trade("t-1", 1, 11, "0.002", "0.05000000"), trade("t-1", 1, 12, "0.001", "0.02500000")]
    events = [
        StreamEvent("id-t-1", 1, "NEW"),
        StreamEvent("id-t-1", 2, "PARTIALLY_FILLED"),
        StreamEvent("id-t-1", 3, "FILLED"),
        StreamEvent("id-t-2", 1, "NEW"),
        StreamEvent("id-t-3", 1, "NEW"),
        StreamEvent("id-t-3", 2, "REJECTED"),
    ]
    return accepted, service, sims, trades, events


def test_consistent_records_pass() -> None:
    accepted, service, sims, trades, events = good_world()
    verdict = verify(accepted, service, sims, trades, [StreamRecord("A", events)], P)
    assert verdict.ok, verdict.details()
    assert verdict.line() == (
        "lost = 0, duplicated = 0, mismatched = 0 (checked 3 orders, 2 fills, 6 stream updates)"
    )


def test_lost_orders_are_counted() -> None:
    accepted, service, sims, trades, events = good_world()
    service["t-2"] = None  # accepted, gone
    service["t-3"] = view("t-3", "UNKNOWN")  # never settled
    accepted["t-4"] = None  # CreateOrder never answered; the exchange has it, the service does not
    sims.append(sim_order("t-4", 4, "NEW", "0"))
    verdict = verify(accepted, service, sims, trades, [StreamRecord("A", events)], P)
    assert len(verdict.lost) == 3 and not verdict.duplicated, verdict.details()


def test_duplicates_are_counted() -> None:
    accepted, service, sims, trades, events = good_world()
    sims.append(sim_order("t-2", 5, "NEW", "0"))  # sent twice
    events.append(StreamEvent("id-t-1", 3, "FILLED"))  # same version again after a resume
    verdict = verify(accepted, service, sims, trades, [StreamRecord("A", events)], P)
    assert len(verdict.duplicated) == 2, verdict.details()
    assert not verdict.mismatched, verdict.details()  # the repeated FILLED is one version


def test_mismatches_are_counted() -> None:
    accepted, service, sims, trades, events = good_world()
    service["t-1"] = view("t-1", "PARTIALLY_FILLED", "0.002", "0.05", fills=[("11", "0.002", "0.05")])
    service["t-3"] = view("t-3", "FILLED", "0.001", "0.01", fills=[("99", "0.001", "0.01")])
    verdict = verify(accepted, service, sims, trades, [StreamRecord("A", events)], P)
    assert set(verdict.mismatched) == {"t-1", "t-3"}, verdict.details()
    text = "\n".join(p for problems in verdict.mismatched.values() for p in problems)
    assert "state PARTIALLY_FILLED, exchange says FILLED" in text
    assert "filled 0.002, exchange executedQty 0.003" in text
    assert "fee 0.05, exchange commission" in text
    assert "missing ['12']" in text
    assert "never received it" in text
    assert "final state FILLED arrived 0 times" in text  # t-3's FILLED never streamed
    assert not verdict.lost and not verdict.duplicated


def test_a_conditional_order_is_checked_against_the_order_its_trigger_placed() -> None:
    accepted, service, sims, trades, events = good_world()
    accepted.update({"t-5": "id-t-5", "t-6": "id-t-6"})
    service["t-5"] = view("t-5", "FILLED", "0.002", "0.05", fills=[("21", "0.002", "0.05")])
    service["t-6"] = view("t-6", "CANCELED")  # canceled while waiting: never placed an order
    algos = [
        {"clientAlgoId": "t-5", "algoId": 7, "algoStatus": "FINISHED", "actualOrderId": "50"},
        {"clientAlgoId": "t-6", "algoId": 8, "algoStatus": "CANCELED", "actualOrderId": ""},
    ]
    sims.append(sim_order("sim-made-id", 50, "FILLED", "0.002"))  # the triggered MARKET order
    trades.append(trade("sim-made-id", 50, 21, "0.002", "0.05"))
    events += [StreamEvent("id-t-5", 3, "FILLED"), StreamEvent("id-t-6", 3, "CANCELED")]
    checked = [StreamRecord("A", events, checked=False)]
    verdict = verify(accepted, service, sims, trades, checked, P, algos)
    assert verdict.ok, verdict.details()
    assert verdict.checked_fills == 3

    algos.append({"clientAlgoId": "t-5", "algoId": 9, "algoStatus": "NEW", "actualOrderId": ""})
    service["t-6"] = view("t-6", "FILLED", "0.002", "0.05", fills=[("21", "0.002", "0.05")])
    verdict = verify(accepted, service, sims, trades, checked, P, algos)
    assert len(verdict.duplicated) == 1 and "2 conditional orders" in verdict.duplicated[0]
    assert "never received it" in "; ".join(verdict.mismatched["t-6"])


def test_stream_gaps_and_disorder_are_mismatches() -> None:
    accepted, service, sims, trades, events = good_world()
    disorder = [events[0], events[2], events[1], *events[3:]]
    gap = [e for e in events if e.state != "PARTIALLY_FILLED"]  # t-1 version 2 missed
    verdict = verify(
        accepted,
        service,
        sims,
        trades,
        [StreamRecord("A", disorder), StreamRecord("B", gap, checked=False)],
        P,
    )
    assert verdict.mismatched == {"t-1": ["stream A: version 2 arrived after version 3"]}
    verdict = verify(accepted, service, sims, trades, [StreamRecord("A", gap)], P)
    assert verdict.mismatched == {"t-1": ["stream A: versions [2] never received"]}
    late = [e for e in events if e.version != 1 or e.order_id != "id-t-3"]  # subscribed too late for t-3
    verdict = verify(accepted, service, sims, trades, [StreamRecord("A", late)], P)
    assert verdict.mismatched == {"t-3": ["stream A: first update received is version 2 REJECTED, not NEW"]}
    missed_final = [e for e in events if e.state != "REJECTED"]
    verdict = verify(accepted, service, sims, trades, [StreamRecord("A", missed_final)], P)
    assert verdict.mismatched == {
        "t-3": [
            "stream A: last update received is version 1, the order is at version 2",
            "stream A: final state REJECTED arrived 0 times",
        ]
    }


def test_a_fill_recorded_after_the_final_state_is_not_a_second_arrival() -> None:
    accepted, service, sims, trades, events = good_world()
    service["t-1"] = view(
        "t-1",
        "FILLED",
        "0.003",
        "0.075",
        version=4,
        fills=[("11", "0.002", "0.05"), ("12", "0.001", "0.025")],
    )
    events.append(StreamEvent("id-t-1", 4, "FILLED"))  # the same state, one more fill recorded
    assert verify(accepted, service, sims, trades, [StreamRecord("A", events)], P).ok
    events.append(StreamEvent("id-t-2", 1, "NEW"))  # but the same version twice is a duplicate
    verdict = verify(accepted, service, sims, trades, [StreamRecord("A", events)], P)
    assert verdict.duplicated == ["stream A: t-2 version 1 received 2 times"] and not verdict.mismatched


# ---------------------------------------------------------------------- the gateway kill's accounting
OUTAGE = GatewayOutage(
    killed_s=10.0, ready_s=11.5, in_flight=2, old="gateway (pgid 1)", new="gateway.2 (pid 2)"
)


def test_ride_through_sorts_the_calls_a_gateway_kill_touched() -> None:
    calls = [
        CreateCall("t-0", 9.0, 9.004, "OK"),  # done before the kill: untouched
        CreateCall("t-1", 9.998, 10.001, "UNAVAILABLE"),  # in flight at the kill, already stored
        CreateCall("t-2", 9.999, 10.001, "UNAVAILABLE"),  # in flight, not stored
        CreateCall("t-3", 10.2, 10.201, "UNAVAILABLE"),  # refused while down
        CreateCall("t-1", 10.3, 10.301, "UNAVAILABLE"),
        CreateCall("t-1", 12.5, 12.504, "OK", duplicate=True),  # the first OK after the kill
        CreateCall("t-2", 12.6, 12.604, "OK"),
        CreateCall("t-3", 12.7, 12.704, "OK"),
        CreateCall("t-4", 20.0, 20.001, "UNAVAILABLE"),  # later (a Redis restart): not this kill's
    ]
    accepted: dict[str, str | None] = {f"t-{n}": f"id-{n}" for n in range(5)}
    ride = ride_through(OUTAGE, calls, accepted)
    assert ride.recovered_s == 12.504
    assert ride.died_in_flight == Counter({"UNAVAILABLE": 2})
    assert ride.refused_while_down == Counter({"UNAVAILABLE": 2})
    assert ride.orders == {"t-1", "t-2", "t-3"} == ride.accepted
    assert ride.stored_before_kill == {"t-1"}
    assert "2 died (UNAVAILABLE x2), 1 of those already stored (the retry answered duplicate)" in ride.line()


def test_ride_through_shows_an_order_that_never_got_through() -> None:
    calls = [CreateCall("t-1", 10.1, 10.101, "UNAVAILABLE"), CreateCall("t-1", 10.2, 10.201, "UNAVAILABLE")]
    ride = ride_through(OUTAGE, calls, {"t-1": None})
    assert ride.recovered_s is None and ride.calls == 2
    assert ride.orders == {"t-1"} and not ride.accepted
    assert "first CreateOrder OK never" in ride.line()


# ---------------------------------------------------------------------- per account
KEYS = {"default": "key-d", "acct-2": "key-2"}


def two_account_world() -> tuple[
    dict[str, str | None],
    dict[str, str],
    dict[str, OrderView | None],
    list[Any],
    list[Any],
    list[StreamEvent],
]:
    """good_world's t-1..t-3 on `default`, and t-4 (filled) and t-5 (resting) on `acct-2`."""
    accepted, service, sims, trades, events = good_world()
    service = {cid: replace(v, account="default") if v else None for cid, v in service.items()}
    sims = [{**row, "account": "key-d"} for row in sims]
    trades = [{**row, "account": "key-d"} for row in trades]
    accepted.update({"t-4": "id-t-4", "t-5": "id-t-5"})
    filled = view("t-4", "FILLED", "0.001", "0.02", version=2, fills=[("41", "0.001", "0.02")])
    service["t-4"] = replace(filled, account="acct-2")
    service["t-5"] = replace(view("t-5", "SUBMITTED", version=1), account="acct-2")
    # Order and trade ids as default's: the checker must not mix the accounts up by id.
    sims += [
        {**sim_order("t-4", 1, "FILLED", "0.001"), "account": "key-2"},
        {**sim_order("t-5", 2, "NEW", "0"), "account": "key-2"},
    ]
    trades.append({**trade("t-4", 1, 41, "0.001", "0.02"), "account": "key-2"})
    events += [
        StreamEvent("id-t-4", 1, "NEW"),
        StreamEvent("id-t-4", 2, "FILLED"),
        StreamEvent("id-t-5", 1, "NEW"),
    ]
    created_on = {"t-1": "default", "t-2": "default", "t-3": "default", "t-4": "acct-2", "t-5": "acct-2"}
    return accepted, created_on, service, sims, trades, events


def test_each_account_is_checked_against_its_own_record() -> None:
    accepted, created_on, service, sims, trades, events = two_account_world()
    verdicts = verify_by_account(
        accepted, created_on, KEYS, service, sims, trades, [StreamRecord("A", events)], P
    )
    zeros = "lost = 0, duplicated = 0, mismatched = 0"
    assert [account_line(name, v) for name, v in verdicts.items()] == [
        f"account default: {zeros} (checked 3 orders, 2 fills, 6 stream updates)",
        f"account acct-2: {zeros} (checked 2 orders, 1 fills, 3 stream updates)",
    ]
    assert total(verdicts).line() == (
        "lost = 0, duplicated = 0, mismatched = 0 (checked 5 orders, 3 fills, 9 stream updates)"
    )


def test_an_order_at_the_exchange_under_the_other_accounts_key_is_mismatched() -> None:
    accepted, created_on, service, sims, trades, events = two_account_world()
    sims[-1] = {**sims[-1], "account": "key-d"}  # t-5, created on acct-2, placed with default's key
    verdicts = verify_by_account(
        accepted, created_on, KEYS, service, sims, trades, [StreamRecord("A", events)], P
    )
    assert verdicts["default"].ok, verdicts["default"].details()  # not "never created" there too
    assert list(verdicts["acct-2"].mismatched) == ["t-5"]
    assert verdicts["acct-2"].mismatched["t-5"] == [
        "at the exchange under account default's key, not account acct-2's",
        "SUBMITTED, but the exchange never received it",
    ]
    assert not verdicts["acct-2"].lost and not verdicts["acct-2"].duplicated


def test_the_same_client_order_id_on_both_accounts_is_not_a_duplicate_of_either() -> None:
    accepted, created_on, service, sims, trades, events = two_account_world()
    sims.append({**sim_order("t-5", 7, "NEW", "0"), "account": "key-d"})  # t-5 sent again, wrong key
    verdicts = verify_by_account(
        accepted, created_on, KEYS, service, sims, trades, [StreamRecord("A", events)], P
    )
    assert not verdicts["acct-2"].duplicated and list(verdicts["acct-2"].mismatched) == ["t-5"]
    assert "under account default's key" in verdicts["acct-2"].mismatched["t-5"][0]
    assert verdicts["default"].ok


def test_an_order_the_service_records_on_the_other_account_is_mismatched() -> None:
    accepted, created_on, service, sims, trades, events = two_account_world()
    moved = service["t-4"]
    assert moved is not None
    service["t-4"] = replace(moved, account="default")
    verdicts = verify_by_account(
        accepted, created_on, KEYS, service, sims, trades, [StreamRecord("A", events)], P
    )
    assert verdicts["acct-2"].mismatched == {
        "t-4": ["the service has it on account 'default', created on 'acct-2'"]
    }
    assert verdicts["default"].ok


def test_findings_are_counted_for_their_account_and_in_the_total() -> None:
    accepted, created_on, service, sims, trades, events = two_account_world()
    service["t-5"] = None  # acct-2's accepted order, gone
    missed = [e for e in events if e.order_id != "id-t-4" or e.version != 2]  # t-4's FILLED never streamed
    verdicts = verify_by_account(
        accepted, created_on, KEYS, service, sims, trades, [StreamRecord("A", missed)], P
    )
    assert verdicts["default"].ok, verdicts["default"].details()
    acct2 = verdicts["acct-2"]
    assert len(acct2.lost) == 1 and "t-5" in acct2.lost[0]
    assert set(acct2.mismatched) == {"t-4"}
    everything = total(verdicts)
    assert everything.lost == [f"account acct-2: {acct2.lost[0]}"]
    assert (len(everything.lost), len(everything.mismatched), everything.checked_orders) == (1, 1, 4)
