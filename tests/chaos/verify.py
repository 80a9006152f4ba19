"""Compare the service's record of every order with the simulator's and with the stream clients'.

Pure functions over plain data, so the checker itself is tested without any process
(tests/chaos/test_chaos_checker.py). Three counts come out:

* lost: an order the gateway accepted that it cannot find, or that is still unsettled
  (NEW, SUBMITTING, UNKNOWN, PENDING_CANCEL) after quiesce; or an order of ours the
  exchange has and the service does not know;
* duplicated: a client order id the exchange holds more than one order for; an
  (order id, version) update a stream client received more than once;
* mismatched (counted per order): state, filled quantity, fee or trades that differ from the exchange's; fills
  that do not add up to the filled quantity; a final state a checked stream client did not
  receive exactly once; an order's updates arriving out of version order.

`verify` checks one account's orders against that account's record at the simulator;
tests/chaos/by_account.py splits a run over several accounts into one such check each.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

UNSETTLED = frozenset({"NEW", "SUBMITTING", "UNKNOWN", "PENDING_CANCEL"})
FINAL = frozenset({"FILLED", "CANCELED", "REJECTED", "EXPIRED"})
# Binance order status -> the service's state for the same order.
SIM_STATUS = {
    "NEW": "SUBMITTED",
    "PARTIALLY_FILLED": "PARTIALLY_FILLED",
    "FILLED": "FILLED",
    "CANCELED": "CANCELED",
    "EXPIRED": "EXPIRED",
    "EXPIRED_IN_MATCH": "EXPIRED",
}
# States an order the exchange never received may end in.
NEVER_SENT_STATES = frozenset({"REJECTED", "EXPIRED", "CANCELED"})
ZERO = Decimal(0)


def dec(value: object) -> Decimal:
    """A decimal from a wire value; empty means zero. Unparsable text raises ValueError."""
    text = str(value).strip() if value is not None else ""
    if not text:
        return ZERO
    try:
        return Decimal(text)
    except InvalidOperation as exc:
        raise ValueError(f"not a decimal: {value!r}") from exc


@dataclass(frozen=True)
class FillView:
    trade_id: str
    quantity: Decimal
    fee: Decimal


@dataclass(frozen=True)
class OrderView:
    """The service's record of one order (decoupled from protobuf)."""

    order_id: str
    client_order_id: str
    symbol: str
    state: str
    filled: Decimal
    fee: Decimal
    version: int
    fills: tuple[FillView, ...] = ()
    account: str = ""  # the exchange account the service has it on (checked by tests/chaos/by_account.py)


@dataclass(frozen=True)
class StreamEvent:
    """One update a stream client received."""

    order_id: str
    version: int
    state: str


@dataclass(frozen=True)
class StreamRecord:
    name: str
    events: Sequence[StreamEvent]
    checked: bool = True  # its final states must each arrive exactly once


@dataclass
class Verdict:
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    mismatched: dict[str, list[str]] = field(default_factory=dict)  # client order id -> problems
    checked_orders: int = 0
    checked_fills: int = 0
    stream_updates: int = 0
    never_accepted: int = 0  # CreateOrder never answered OK and nothing of it exists anywhere

    def mismatch(self, client_order_id: str, problem: str) -> None:
        self.mismatched.setdefault(client_order_id, []).append(problem)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.mismatched)

    def line(self) -> str:
        return (
            f"lost = {len(self.lost)}, duplicated = {len(self.duplicated)}, "
            f"mismatched = {len(self.mismatched)} (checked {self.checked_orders} orders, "
            f"{self.checked_fills} fills, {self.stream_updates} stream updates)"
        )

    def details(self, limit: int = 8) -> str:
        out: list[str] = []
        mismatched = [f"{cid}: {'; '.join(problems)}" for cid, problems in sorted(self.mismatched.items())]
        for name, items in (("lost", self.lost), ("duplicated", self.duplicated), ("mismatched", mismatched)):
            if not items:
                continue
            out.append(f"{name} ({len(items)}), first {min(limit, len(items))}:")
            out.extend(f"  - {item}" for item in items[:limit])
        return "\n".join(out)


def _sim_by_client_id(
    sim_orders: Iterable[Mapping[str, Any]], prefix: str, key: str = "clientOrderId"
) -> dict[str, list[Mapping[str, Any]]]:
    grouped: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for order in sim_orders:
        cid = str(order.get(key, ""))
        if cid.startswith(prefix):
            grouped[cid].append(order)
    return grouped


def verify(
    accepted: Mapping[str, str | None],
    service: Mapping[str, OrderView | None],
    sim_orders: Sequence[Mapping[str, Any]],
    sim_trades: Sequence[Mapping[str, Any]],
    streams: Sequence[StreamRecord],
    prefix: str,
    sim_algo_orders: Sequence[Mapping[str, Any]] = (),
) -> Verdict:
    """Check every order the test tried to create.

    `accepted`: client order id -> order id CreateOrder answered with (None: it never
    answered OK). `service`: client order id -> the service's record now (None or absent:
    not found). `sim_orders` / `sim_trades` / `sim_algo_orders`: GET /admin/orders,
    /admin/trades and /admin/algo-orders. Only client ids starting with `prefix` are the
    test's. A conditional order is the algo order with its client id as clientAlgoId; once
    triggered, what it is compared with is the order it placed (its actualOrderId).
    """
    verdict = Verdict()
    by_cid = _sim_by_client_id(sim_orders, prefix)
    by_exchange_id = {str(order.get("orderId")): order for order in sim_orders}
    for cid, algos in sorted(_sim_by_client_id(sim_algo_orders, prefix, key="clientAlgoId").items()):
        if len(algos) > 1:
            ids = ", ".join(f"{a.get('algoId')} {a.get('algoStatus')}" for a in algos)
            verdict.duplicated.append(f"{cid}: the exchange holds {len(algos)} conditional orders ({ids})")
        placed = by_exchange_id.get(str(algos[0].get("actualOrderId") or ""))
        if cid not in accepted:
            verdict.mismatch(cid, "at the exchange but never created by the test")
        elif placed is not None:
            by_cid.setdefault(cid, []).append(placed)
    trades_by_order: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    placed_by_algos = {str(sims[-1].get("orderId")) for sims in by_cid.values() if sims}
    for trade in sim_trades:
        if (
            str(trade.get("clientOrderId", "")).startswith(prefix)
            or str(trade.get("orderId")) in placed_by_algos
        ):
            trades_by_order[str(trade["orderId"])].append(trade)

    for cid, sims in sorted(by_cid.items()):
        if len(sims) > 1:
            ids = ", ".join(f"{s.get('orderId')} {s.get('status')}" for s in sims)
            verdict.duplicated.append(f"{cid}: the exchange holds {len(sims)} orders ({ids})")
        if cid not in accepted:
            verdict.mismatch(cid, "at the exchange but never created by the test")

    checked: dict[str, OrderView] = {}
    for cid, order_id in accepted.items():
        mine = service.get(cid)
        sims = by_cid.get(cid, [])
        if mine is None:
            if order_id is not None:
                verdict.lost.append(f"{cid} (order {order_id}): accepted, but the service cannot find it")
            elif sims:
                verdict.lost.append(
                    f"{cid}: CreateOrder never succeeded, the service has no such order, "
                    f"yet the exchange has it ({sims[0].get('status')})"
                )
            else:
                verdict.never_accepted += 1
            continue
        if order_id is not None and mine.order_id != order_id:
            verdict.mismatch(cid, f"CreateOrder answered {order_id}, the service now has {mine.order_id}")
        verdict.checked_orders += 1
        checked[mine.order_id] = mine
        if mine.state in UNSETTLED:
            verdict.lost.append(f"{cid} (order {mine.order_id}): still {mine.state} after quiesce")
            continue
        problems = _compare(mine, sims[0] if sims else None, trades_by_order)
        if sims:
            verdict.checked_fills += len(trades_by_order.get(str(sims[0].get("orderId")), []))
        for problem in problems:
            verdict.mismatch(cid, problem)

    for record in streams:
        _check_stream(record, checked, verdict)
    if streams:
        verdict.stream_updates = len(streams[0].events)
    return verdict


def _compare(
    mine: OrderView,
    sim: Mapping[str, Any] | None,
    trades_by_order: Mapping[str, list[Mapping[str, Any]]],
) -> list[str]:
    problems: list[str] = []
    fills_qty = sum((f.quantity for f in mine.fills), ZERO)
    fills_fee = sum((f.fee for f in mine.fills), ZERO)
    if fills_qty != mine.filled:
        problems.append(f"fills add up to {fills_qty}, filled_quantity is {mine.filled}")
    if mine.fills and fills_fee != mine.fee:
        problems.append(f"fill fees add up to {fills_fee}, fee is {mine.fee}")
    if sim is None:
        if mine.state not in NEVER_SENT_STATES:
            problems.append(f"{mine.state}, but the exchange never received it")
        if mine.filled != ZERO or mine.fee != ZERO:
            problems.append(f"never at the exchange, yet filled {mine.filled} fee {mine.fee}")
        return problems
    status = str(sim.get("status"))
    expected = SIM_STATUS.get(status, f"?{status}")
    if mine.state != expected:
        problems.append(f"state {mine.state}, exchange says {status} (expected {expected})")
    executed = dec(sim.get("executedQty"))
    if mine.filled != executed:
        problems.append(f"filled {mine.filled}, exchange executedQty {executed}")
    trades = trades_by_order.get(str(sim.get("orderId")), [])
    commission = sum((dec(t.get("commission")) for t in trades), ZERO)
    if mine.fee != commission:
        problems.append(f"fee {mine.fee}, exchange commission {commission} over {len(trades)} trades")
    theirs = Counter(str(t.get("id")) for t in trades)
    ours = Counter(f.trade_id for f in mine.fills)
    if ours != theirs:
        missing = sorted((theirs - ours).elements())
        extra = sorted((ours - theirs).elements())
        problems.append(f"fills differ from the exchange's trades: missing {missing}, extra {extra}")
    return problems


def _check_stream(record: StreamRecord, orders: Mapping[str, OrderView], verdict: Verdict) -> None:
    """Duplicates for every stream; for a checked one (subscribed before the first order) also:
    each order's updates in version order with no gap, ending at its current version, and
    its final state arriving once (later versions in the same state, e.g. a fill recorded
    after the exchange reported FILLED, are not a second arrival)."""
    seen = Counter((e.order_id, e.version) for e in record.events if e.order_id in orders)
    for (order_id, version), times in sorted(seen.items()):
        if times > 1:
            cid = orders[order_id].client_order_id
            verdict.duplicated.append(f"stream {record.name}: {cid} version {version} received {times} times")
    if not record.checked:
        return
    per_order: dict[str, list[StreamEvent]] = defaultdict(list)
    for event in record.events:
        if event.order_id in orders:
            per_order[event.order_id].append(event)
    for order_id, order in orders.items():
        events = per_order.get(order_id, [])

        def problem(text: str, cid: str = order.client_order_id) -> None:
            verdict.mismatch(cid, f"stream {record.name}: {text}")

        if not events:
            problem("received no update of this order")
        elif events[0].state != "NEW":
            problem(f"first update received is version {events[0].version} {events[0].state}, not NEW")
        for before, after in itertools.pairwise(events):
            if after.version < before.version:
                problem(f"version {after.version} arrived after version {before.version}")
                break
        versions = {e.version for e in events}
        if events and max(versions) != order.version:
            problem(
                f"last update received is version {max(versions)}, the order is at version {order.version}"
            )
        if events:
            gaps = sorted(set(range(min(versions), max(versions))) - versions)  # the tail: above
            if gaps:
                problem(f"versions {gaps[:6]} never received")
        if order.state in FINAL:
            arrivals = sum(
                1
                for before, after in itertools.pairwise([None, *events])
                if after is not None
                and after.state == order.state
                and (before is None or before.state != order.state)
            )
            if arrivals != 1:
                problem(f"final state {order.state} arrived {arrivals} times")
