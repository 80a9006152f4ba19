"""The chaos test's end: let every order settle, then compare the service with the exchange.

`sweep_and_freeze` moves each price down and up a little (resting orders near it fill)
and then stops all fills; `wait_settled` polls until no order is unsettled;
`check_against_exchange` runs the checker (tests/chaos/verify.py) until it agrees or
time runs out, since the service's record may trail the exchange's by a moment;
`check_accounts_against_exchange` does the same with one verdict per exchange account
(tests/chaos/by_account.py), each order checked against its own account's record.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import httpx

from order_execution.proto import order_pb2_grpc
from tests.chaos.by_account import account_line, verify_by_account
from tests.chaos.streams import StreamRecorder
from tests.chaos.verify import UNSETTLED, OrderView, StreamRecord, Verdict, verify
from tests.chaos.workload import Clock, PlannedOrder, on_tick, plain, sizing_for, snapshot

if TYPE_CHECKING:  # the async stub exists only in the type stubs
    Stub = order_pb2_grpc.OrderServiceAsyncStub


async def sweep_and_freeze(admin: httpx.AsyncClient, clock: Clock, symbols: list[str]) -> None:
    """Move every price down and up a little (resting orders near it fill), then stop all fills."""
    prices = {s: Decimal(v["price"]) for s, v in (await admin.get("/admin/prices")).json().items()}
    for move in (Decimal("-0.004"), Decimal("0.004")):
        for symbol in symbols:
            price = on_tick(prices[symbol] * (1 + move), sizing_for(symbol).tick)
            (
                await admin.post("/admin/price", json={"symbol": symbol, "price": plain(price)})
            ).raise_for_status()
        await asyncio.sleep(0.5)
    for symbol in symbols:  # liquidity 0: the walk goes on, but nothing fills any more
        (await admin.post("/admin/price", json={"symbol": symbol, "liquidity": "0"})).raise_for_status()
    clock.log("quiesce", "prices swept -0.4% / +0.4%; liquidity 0 from now on (no more fills)")


def _unsettled(views: dict[str, OrderView | None]) -> list[str]:
    out = []
    for cid, view in views.items():
        if view is None:
            continue
        if view.state in UNSETTLED or sum((f.quantity for f in view.fills), Decimal(0)) != view.filled:
            out.append(cid)
    return out


async def wait_settled(
    stub: Stub, plan: list[PlannedOrder], prefix: str, clock: Clock, timeout_s: float
) -> None:
    """Poll the service until every order is settled (fills adding up), or `timeout_s` has passed."""
    deadline = clock() + timeout_s
    last_log = 0.0
    while True:
        views = await snapshot(stub, plan, prefix, every_get=False)
        pending = _unsettled(views)
        if not pending:
            clock.log("quiesce", "every order settled")
            return
        if clock() - last_log > 5 or clock() > deadline:
            states = Counter(v.state for cid, v in views.items() if cid in pending and v is not None)
            clock.log("quiesce", f"{len(pending)} orders not settled: {dict(states)} e.g. {pending[:3]}")
            last_log = clock()
        if clock() > deadline:
            clock.log("quiesce", f"gave up waiting after {timeout_s:.0f} s")
            return
        await asyncio.sleep(1.0)


async def check_against_exchange(
    stub: Stub,
    admin: httpx.AsyncClient,
    plan: list[PlannedOrder],
    prefix: str,
    streams: list[StreamRecorder],
    clock: Clock,
    timeout_s: float,
) -> tuple[Verdict, dict[str, OrderView | None]]:
    """Compare until everything agrees or `timeout_s` has passed; return the last verdict and records.

    One account: every order of `prefix` the simulator holds, whichever key placed it."""
    accepted = {item.client_order_id: item.order_id for item in plan}

    def judge(world: _World) -> dict[str, Verdict]:
        return {
            "": verify(
                accepted, world.views, world.orders, world.trades, world.records, prefix, world.algo_orders
            )
        }

    verdicts, views = await _until_agreed(judge, stub, admin, plan, prefix, streams, clock, timeout_s)
    return verdicts[""], views


async def check_accounts_against_exchange(
    stub: Stub,
    admin: httpx.AsyncClient,
    plan: list[PlannedOrder],
    prefix: str,
    streams: list[StreamRecorder],
    clock: Clock,
    timeout_s: float,
    account_keys: Mapping[str, str],
) -> tuple[dict[str, Verdict], dict[str, OrderView | None]]:
    """`check_against_exchange` with one verdict per account of `account_keys` (name -> API key
    at the simulator): each planned order (`PlannedOrder.account`, every one naming one of
    them) is checked against the simulator's record of its own account."""
    accepted = {item.client_order_id: item.order_id for item in plan}
    created_on = {item.client_order_id: item.account for item in plan}

    def judge(world: _World) -> dict[str, Verdict]:
        return verify_by_account(
            accepted,
            created_on,
            account_keys,
            world.views,
            world.orders,
            world.trades,
            world.records,
            prefix,
            world.algo_orders,
        )

    return await _until_agreed(judge, stub, admin, plan, prefix, streams, clock, timeout_s)


@dataclass(frozen=True)
class _World:
    """One reading of everything the checker compares."""

    views: dict[str, OrderView | None]  # the service's record, by client order id
    orders: list[dict[str, Any]]  # the simulator's /admin/orders, /admin/trades, /admin/algo-orders
    trades: list[dict[str, Any]]
    algo_orders: list[dict[str, Any]]
    records: list[StreamRecord]  # what each stream client received so far


async def _until_agreed(
    judge: Callable[[_World], dict[str, Verdict]],
    stub: Stub,
    admin: httpx.AsyncClient,
    plan: list[PlannedOrder],
    prefix: str,
    streams: list[StreamRecorder],
    clock: Clock,
    timeout_s: float,
) -> tuple[dict[str, Verdict], dict[str, OrderView | None]]:
    """Read everything and `judge` it, every 2 s, until every verdict is ok or `timeout_s` has passed."""
    deadline = clock() + timeout_s
    while True:
        sim_orders = (await admin.get("/admin/orders")).json()
        sim_trades = (await admin.get("/admin/trades")).json()
        sim_algo_orders = (await admin.get("/admin/algo-orders")).json()
        views = await snapshot(stub, plan, prefix, every_get=True)
        records = [StreamRecord(s.name, list(s.events)) for s in streams]
        verdicts = judge(_World(views, sim_orders, sim_trades, sim_algo_orders, records))
        if all(v.ok for v in verdicts.values()) or clock() > deadline:
            return verdicts, views
        pending = "; ".join(
            account_line(name, v) if name else v.line() for name, v in verdicts.items() if not v.ok
        )
        clock.log("verify", f"not yet: {pending}; checking again")
        await asyncio.sleep(2.0)
