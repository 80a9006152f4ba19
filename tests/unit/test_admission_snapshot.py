"""Admission from the gateway's per-account snapshot (`gateway.admission_snapshot`).

With `admission.snapshot_max_age_ms` set, a CreateOrder check answers from a snapshot read in one
pipeline: a fresh one costs no Redis command, a stale one starts exactly one background re-read,
one past the max age (or a max age of 0) is read inline; orders let through since count on top
of it, and a failed background re-read fails no order. Redis is fakeredis, its commands counted
on the gateway's connection; the monotonic clock is a fake one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import fakeredis
import grpc
import pytest
import redis.exceptions

import order_execution.gateway.admission_snapshot as admission_snapshot
from order_execution.exchange.breakers import Group, breaker_key
from order_execution.exchange.rate_budget import BudgetState, RateBudget
from order_execution.gateway.admission import AccountGate, Admission
from order_execution.orders.errors import ExchangeNotAccepting, Overloaded
from order_execution.orders.model import DEFAULT_ACCOUNT
from order_execution.orders.store import OrderStore
from order_execution.proto import order_pb2 as pb
from order_execution.runtime.settings import AdmissionSettings
from tests.factories import make_order
from tests.unit.gateway_harness import running_gateway

OPEN_MESSAGE = "circuit breaker binance_create_order is open"


class CountingRedis(fakeredis.FakeAsyncRedis):
    """The gateway's connection: counts the commands it sends (a pipeline's each), and fails
    them all while `down`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.commands = 0
        self.down = False

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self._count(1)
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]

    def _count(self, commands: int) -> None:
        if self.down:
            raise redis.exceptions.ConnectionError(
                "Error 111 connecting to 127.0.0.1:6379. Connection refused."
            )
        self.commands += commands

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction=transaction, shard_hint=shard_hint)
        execute, owner = pipe.execute, self

        async def counted(raise_on_error: bool = True) -> Any:
            owner._count(len(pipe.command_stack))
            return await execute(raise_on_error)

        pipe.execute = counted  # type: ignore[method-assign]
        return pipe


class Harness:
    """One account's Redis: the gateway's counted connection, and another process's."""

    def __init__(self) -> None:
        self.server = fakeredis.FakeServer()
        self.gateway = CountingRedis(server=self.server)
        self.other = fakeredis.FakeAsyncRedis(server=self.server)
        self.queued = 0

    def admission(self, *, budget: bool = False, **settings: Any) -> Admission:
        gate = AccountGate(
            RateBudget(self.gateway, requests_per_second=10, burst=20, cancel_reserve=0.2)
            if budget
            else None,
            "oe",
        )
        return Admission(
            store=OrderStore(self.gateway),
            settings=AdmissionSettings(
                **{"snapshot_refresh_ms": 50, "snapshot_max_age_ms": 1000, **settings}
            ),
            max_order_age_ms=1000,
            accounts={DEFAULT_ACCOUNT: gate},
        )

    async def queue(self, count: int, symbol: str = "BTCUSDT") -> None:
        """`count` more accepted, not yet sent orders of `symbol`, stored by another gateway."""
        store = OrderStore(self.other)
        for _ in range(count):
            self.queued += 1
            n = self.queued
            await store.create(make_order(order_id=f"o{n}", client_order_id=f"oe-{n}", symbol=symbol))

    async def open_breaker(self) -> None:
        await self.other.set(breaker_key("oe", Group.CREATE), "open")
        await self.other.set(breaker_key("oe", Group.CREATE, "opened_at"), "9999999999")


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    await harness.gateway.aclose()
    await harness.other.aclose()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(admission_snapshot, "time", SimpleNamespace(monotonic=lambda: clock.now))
    return clock


async def admit(admission: Admission, symbol: str = "BTCUSDT") -> None:
    """A CreateOrder's admission and its create, as place_order runs them."""
    await admission.check_create(symbol)
    admission.create_done(symbol)


def limit_order(client_order_id: str) -> pb.CreateOrderRequest:
    return pb.CreateOrderRequest(
        symbol="BTCUSDT",
        side=pb.BUY,
        type=pb.LIMIT,
        quantity="0.002",
        price="50000.0",
        time_in_force=pb.GTC,
        client_order_id=client_order_id,
    )


async def settle_background(admission: Admission) -> None:
    """Wait for the account's background refresh, if one runs."""
    refreshing = admission._snapshots._accounts[DEFAULT_ACCOUNT].refreshing
    if refreshing is not None:
        await refreshing


async def test_a_fresh_snapshot_answers_with_no_redis_command(
    harness: Harness, clock: SimpleNamespace
) -> None:
    admission = harness.admission(budget=True)
    await admit(admission)  # no snapshot yet: read inline
    sent = harness.gateway.commands
    assert sent > 0
    clock.now += 0.049
    for _ in range(10):
        await admit(admission)
    await settle_background(admission)
    assert harness.gateway.commands == sent


async def test_a_stale_snapshot_answers_and_starts_exactly_one_background_refresh(
    harness: Harness, clock: SimpleNamespace
) -> None:
    admission = harness.admission()
    await admit(admission)
    await harness.queue(3)
    clock.now += 0.06
    reads: list[list[str]] = []
    read = admission_snapshot.AccountSnapshots._read

    async def counted_read(self: Any, account: str, state: Any, symbols: list[str], *, at_ms: int) -> Any:
        reads.append(symbols)
        return await read(self, account, state, symbols, at_ms=at_ms)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(admission_snapshot.AccountSnapshots, "_read", counted_read)
        await asyncio.gather(*(admit(admission) for _ in range(5)))
        await settle_background(admission)
    assert reads == [[]]  # far below the bound: the account's count alone, no symbol's
    # The refresh saw the other gateway's 3 orders (these 6 were never stored): at a bound of 3
    # the next order is refused.
    admission._settings = AdmissionSettings(max_queued_per_symbol=3, snapshot_max_age_ms=1000)
    with pytest.raises(Overloaded) as caught:
        await admission.check_create("BTCUSDT")
    assert caught.value.limit == "queue_bound"


async def test_orders_let_through_since_the_snapshot_count_up_to_the_bound(
    harness: Harness, clock: SimpleNamespace
) -> None:
    admission = harness.admission(max_queued_per_symbol=5)
    await harness.queue(2)
    await admit(admission)  # snapshot: 2 queued; this order's create was not stored (a fake)
    await admission.check_create("BTCUSDT")  # being created
    await admit(admission)
    sent = harness.gateway.commands
    with pytest.raises(Overloaded) as caught:  # 2 read + 3 let through since
        await admission.check_create("BTCUSDT")
    assert str(caught.value) == (
        "symbol: BTCUSDT has 5 orders accepted and not yet sent "
        "(admission.max_queued_per_symbol=5); retry later"
    )
    await admission.check_create("ETHUSDT")  # another symbol's queue is its own (read inline: new)
    assert harness.gateway.commands > sent


async def test_a_snapshot_past_the_max_age_is_read_inline(harness: Harness, clock: SimpleNamespace) -> None:
    admission = harness.admission(max_queued_per_symbol=3)
    await admit(admission)
    await harness.queue(3)
    clock.now += 1.0
    with pytest.raises(Overloaded, match="has 3 orders"):  # this check's own read, not the snapshot's 0
        await admission.check_create("BTCUSDT")


async def test_a_max_age_of_0_reads_inline_every_time(harness: Harness, clock: SimpleNamespace) -> None:
    admission = harness.admission(snapshot_max_age_ms=0, max_queued_per_symbol=3)
    await admit(admission)
    await harness.queue(3)
    with pytest.raises(Overloaded, match="has 3 orders"):
        await admission.check_create("BTCUSDT")


async def test_an_open_breaker_is_noticed_within_the_refresh_age(
    harness: Harness, clock: SimpleNamespace
) -> None:
    admission = harness.admission(budget=True)
    await admit(admission)
    await harness.open_breaker()
    clock.now += 0.051  # just past admission.snapshot_refresh_ms
    await admit(admission)  # answered from the snapshot; its refresh reads the open breaker
    await settle_background(admission)
    with pytest.raises(ExchangeNotAccepting, match=OPEN_MESSAGE):
        await admission.check_create("BTCUSDT")


async def test_a_failed_background_refresh_fails_no_order_and_is_logged_once(
    harness: Harness, clock: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    admission = harness.admission()
    await admit(admission)
    harness.gateway.down = True
    for _ in range(3):
        clock.now += 0.1
        await admit(admission)  # answered from the snapshot; its refresh fails
        await settle_background(admission)
    failures = [r for r in caplog.records if r.levelno == logging.WARNING and "refresh" in r.getMessage()]
    assert len(failures) == 1
    clock.now += 1.0
    with pytest.raises(redis.exceptions.ConnectionError):  # too old: inline, failing as before
        await admission.check_create("BTCUSDT")
    harness.gateway.down = False
    await harness.queue(1)
    await admit(admission)  # the next check reads again
    assert admission._snapshots._accounts[DEFAULT_ACCOUNT].snapshot.queued_account == 1  # type: ignore[union-attr]


async def test_orders_let_through_since_the_snapshot_are_ahead_in_the_budgets_projection(
    harness: Harness, clock: SimpleNamespace
) -> None:
    # 16 tokens for creates, then 10 a second: within 900 ms an order may have 24 ahead of it.
    admission = harness.admission(budget=True)
    await harness.queue(20, "ETHUSDT")
    for _ in range(5):  # the first reads inline (20 ahead), the rest answer from the snapshot
        await admit(admission)
    with pytest.raises(Overloaded) as caught:
        await admission.check_create("BTCUSDT")
    assert caught.value.limit == "rate_budget"
    assert "(25 orders queued ahead)" in str(caught.value)


def test_a_budget_read_earlier_is_carried_to_the_checks_time() -> None:
    budget = RateBudget(fakeredis.FakeAsyncRedis(), requests_per_second=10, burst=20)
    read_at = 1_020_000  # the start of a 10 s and of a 1 min window
    state = BudgetState(
        tokens=2,
        weight_used=5,
        orders_10s=50,
        orders_1m=60,
        blocked_until_ms=read_at + 500,
        blocked_reason="429",
    )
    soon = admission_snapshot._carried(state, budget, read_at, read_at + 300)
    assert soon == BudgetState(
        tokens=5,
        weight_used=5,
        orders_10s=50,
        orders_1m=60,
        blocked_until_ms=read_at + 500,
        blocked_reason="429",
    )
    later = admission_snapshot._carried(state, budget, read_at, read_at + 11_000)
    assert later == BudgetState(
        tokens=20, weight_used=5, orders_10s=0, orders_1m=60, blocked_until_ms=0, blocked_reason=""
    )


async def test_an_order_stored_through_the_gateway_counts_once(
    harness: Harness, clock: SimpleNamespace
) -> None:
    """PlaceOrder tells admission when its create is over: a stored order then counts in the
    next read, not also as one still being created."""
    admission = harness.admission(max_queued_per_symbol=2)
    async with running_gateway(harness.gateway, harness.other, admission=admission) as stub:
        for n in range(2):
            await stub.CreateOrder(limit_order(f"first-{n}"), timeout=5)
        await harness.other.delete("oe:unsent:BTCUSDT", "oe:unsent")  # the workers sent both
        clock.now += 1.0
        await stub.CreateOrder(limit_order("read-inline"), timeout=5)  # sees none queued
        await stub.CreateOrder(limit_order("from-the-snapshot"), timeout=5)  # 0 read + 1 since
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateOrder(limit_order("over-the-bound"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "has 2 orders accepted and not yet sent" in (caught.value.details() or "")


async def test_far_below_the_bound_a_reread_takes_the_same_commands_however_many_symbols(
    harness: Harness, clock: SimpleNamespace
) -> None:
    admission = harness.admission()
    symbols = [f"S{i}USDT" for i in range(10)]
    for symbol in symbols:
        clock.now += 2.0  # each check past the max age: inline, as the first of the day
        await admit(admission, symbol)
    clock.now += 0.06
    sent = harness.gateway.commands
    await admit(admission, symbols[0])  # stale: answered, re-read in the background
    await settle_background(admission)
    # The account's unsent count and the breaker's two keys: no per-symbol count.
    assert harness.gateway.commands - sent == 2
    assert admission._snapshots._accounts[DEFAULT_ACCOUNT].snapshot.queued is None  # type: ignore[union-attr]


async def test_near_the_bound_each_symbols_own_count_is_judged(
    harness: Harness, clock: SimpleNamespace
) -> None:
    admission = harness.admission(max_queued_per_symbol=4)  # per-symbol counts from 2 unsent on
    await harness.queue(3, "BTCUSDT")
    await admit(admission, "ETHUSDT")  # the account has 3: each symbol's count is kept
    await admit(admission, "BTCUSDT")  # not in the snapshot: read inline, 3 < 4
    with pytest.raises(Overloaded) as caught:  # 3 stored + 1 let through
        await admission.check_create("BTCUSDT")
    assert str(caught.value) == (
        "symbol: BTCUSDT has 4 orders accepted and not yet sent "
        "(admission.max_queued_per_symbol=4); retry later"
    )
    await admit(admission, "ETHUSDT")  # its own count (1 let through) is far from the bound


async def test_crossing_the_threshold_reads_each_symbols_count_inline(
    harness: Harness, clock: SimpleNamespace
) -> None:
    admission = harness.admission(max_queued_per_symbol=4)
    await admit(admission, "BTCUSDT")  # 0 unsent: the account's count bounds each symbol
    account = admission._snapshots._accounts[DEFAULT_ACCOUNT]
    assert account.snapshot is not None and account.snapshot.queued is None
    await harness.queue(2, "ETHUSDT")  # another gateway's, unseen until the next read
    sent = harness.gateway.commands
    await admit(admission, "ETHUSDT")  # 0 read + 1 let through < 2: from the snapshot
    assert harness.gateway.commands == sent
    await admit(admission, "ETHUSDT")  # 0 + 2 >= 2: each symbol's count, read inline
    assert harness.gateway.commands > sent
    assert account.snapshot.queued == {"BTCUSDT": 0, "ETHUSDT": 2}
