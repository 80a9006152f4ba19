"""The outbox relay publishes a read batch from the stored bytes and collects its acks at once.

Covers listener/events.py (`entry_messages`, `EventBus.publish_batch`) and listener/relay.py:
the messages built from an entry's bytes are those the decoded entry gave (subjects, bodies
byte for byte, Nats-Msg-Ids); a batch is written whole before any ack is awaited; an entry is
acked in the outbox only once NATS acked it, and one NATS did not ack stays pending and is
published again with the same ids and bytes, by this relay or the next.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any, cast

import fakeredis
import orjson
import pytest
from nats.aio.msg import Msg
from nats.js.errors import APIError, NoStreamResponseError

from order_execution.listener import events
from order_execution.listener.events import EventBus, Message, entry_messages, order_messages
from order_execution.listener.relay import RELAY_GROUP, OutboxRelay
from order_execution.orders import fsm
from order_execution.orders.model import Fill, Order, OrderState, OrderType, Side, WorkingType
from order_execution.orders.outbox import Outbox, StoredEntry
from order_execution.orders.store import OrderStore
from tests import factories

S = OrderState
FIXED_NOW_MS = 1_700_000_000_123  # an update's timestamp when the order has no updated_at
ACKED = b'{"stream":"ORDERS","seq":1}'
NO_RESPONDERS = b"503"  # FakeNats answers this as a status message (no data)
REFUSED = b'{"error":{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"}}'


@pytest.fixture
async def redis() -> AsyncIterator[fakeredis.FakeAsyncRedis]:
    client = fakeredis.FakeAsyncRedis()
    yield client
    await client.aclose()


def fill(trade_id: str, quantity: str, price: str = "50000.1") -> Fill:
    return Fill(
        trade_id,
        Decimal(quantity),
        Decimal(price),
        Decimal("0.02"),
        "USDT",
        maker=True,
        time=1_700_000_000_000,
    )


def report(state: OrderState, filled: str = "0", *fills: Fill) -> Callable[[Order], Order | None]:
    news = fsm.ExchangeReport(state, Decimal(filled), Decimal("50000.1"), "99", fills=fills)
    return lambda o: fsm.apply_report(o, news)


async def stored_entries(redis: fakeredis.FakeAsyncRedis) -> list[StoredEntry]:
    """Every outbox entry as the relay reads it (through its consumer group)."""
    outbox = Outbox(redis)
    await outbox.ensure_group("test-reader")
    return await outbox.read_group("test-reader", "reader", count=10_000, block_ms=1)


async def order_lives(store: OrderStore) -> None:
    """Entries of every kind: a MARKET order's life (NEW, its claim, the REST FILLED, then its trade:
    TRADE), a LIMIT order filled in parts (two trades in one change), a conditional order of a named
    account with user, owner and a rejection in non-ASCII, and a change of nothing but a field."""
    market = factories.make_order(
        order_id="m1", client_order_id="oe-m1", type=OrderType.MARKET, price=None, time_in_force=None
    )
    await store.create(market)
    await store.transition("m1", lambda o: fsm.transition(o, S.SUBMITTING))
    await store.transition("m1", report(S.FILLED, "0.010"))
    await store.transition("m1", report(S.FILLED, "0.010", fill("t1", "0.010")))
    await store.create(factories.make_order(order_id="l1", client_order_id="oe-l1", side=Side.SELL))
    await store.transition("l1", lambda o: fsm.transition(o, S.SUBMITTING))
    await store.transition(
        "l1", report(S.PARTIALLY_FILLED, "0.006", fill("t2", "0.002"), fill("t3", "0.004"))
    )
    await store.transition("l1", report(S.FILLED, "0.010", fill("t4", "0.004", "49999.9")))
    stop = factories.make_order(
        order_id="c1",
        client_order_id="oe-c1",
        type=OrderType.STOP_MARKET,
        price=None,
        time_in_force=None,
        trigger_price=Decimal("51000.5"),
        working_type=WorkingType.MARK_PRICE,
        user_id="desk-7",
        owner="alice",
        account="acct-2",
        reduce_only=True,
    )
    await store.create(stop)
    await store.transition("c1", lambda o: fsm.transition(o, S.SUBMITTING))
    await store.transition("c1", lambda o: o.replace(sent_at=1_700_000_000_500))  # same state: UPDATE
    await store.transition(
        "c1", lambda o: o.replace(state=S.REJECTED, reject_reason='précision "refusée" \\ ✓', updated_at=0)
    )


async def test_messages_built_from_the_stored_bytes_are_those_of_the_decoded_entry(
    redis: fakeredis.FakeAsyncRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "now_ms", lambda: FIXED_NOW_MS)
    await order_lives(OrderStore(redis))
    entries = await stored_entries(redis)
    assert len(entries) == 12
    for stored in entries:
        decoded = stored.decode()
        before = order_messages(decoded.order, decoded.fills, decoded.update_type)
        assert entry_messages(stored) == before, decoded
    every = [m for stored in entries for m in entry_messages(stored)]
    assert {m.subject for m in every} == {
        "orders.updates.BTCUSDT",
        "orders.fills.BTCUSDT",
    }
    assert [m.msg_id for m in every if m.subject.startswith("orders.fills")] == [
        "m1:fill:t1",
        *(f"l1:fill:t{n}" for n in (2, 3, 4)),
    ]
    types = [orjson.loads(m.body)["update_type"] for m in every if m.subject.startswith("orders.updates")]
    assert types == [
        *("NEW", "SUBMITTING", "FILLED", "TRADE"),
        *("NEW", "SUBMITTING", "PARTIALLY_FILLED", "FILLED"),
        *("NEW", "SUBMITTING", "UPDATE", "REJECTED"),
    ]


async def test_an_entry_stored_by_an_older_version_gets_the_messages_it_always_got(
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    order = factories.make_order(state=S.FILLED, version=5, updated_at=1_700_000_000_000)
    legacy = order.to_dict()
    del legacy["account"], legacy["position_side"]  # fields added since
    old_fill = fill("t9", "0.010").to_dict()
    del old_fill["maker"]
    stored = StoredEntry("1-0", orjson.dumps(legacy), b"FILLED", orjson.dumps([old_fill]))
    decoded = stored.decode()
    assert entry_messages(stored) == order_messages(decoded.order, decoded.fills, decoded.update_type)
    assert orjson.loads(entry_messages(stored)[-1].body)["order"]["account"] == "default"


# --- EventBus.publish_batch over a stand-in of nats-py's client ---------------------------------


class FakeNats:
    """nats-py's client as `EventBus` uses it. JetStream answers what a flush carried: the acks of
    the messages written since the last flush come once the writer yields (as the socket is written
    and the server answers), each as `answer(msg_id)` says (None: no answer at all)."""

    def __init__(self, answer: Callable[[str], bytes | None] = lambda _: ACKED) -> None:
        self.answer = answer
        self.published: list[Message] = []
        self.flushes: list[int] = []  # messages per flush
        self.fail_publish_at: int | None = None  # this publish (0-based, overall) raises
        self._unflushed: list[tuple[str, str]] = []
        self._inbox_cb: Callable[[Msg], Any] | None = None
        self._answering: set[asyncio.Future[Any]] = set()

    def jetstream(self) -> None:
        return None

    def new_inbox(self) -> str:
        return "_INBOX.fake"

    async def subscribe(self, subject: str, cb: Callable[[Msg], Any]) -> None:
        assert subject == "_INBOX.fake.*.*"
        self._inbox_cb = cb

    async def publish(self, subject: str, payload: bytes, reply: str, headers: dict[str, str]) -> None:
        if self.fail_publish_at == len(self.published):
            raise ConnectionError("nats: outbound buffer limit exceeded")
        self.published.append(Message(subject, payload, headers["Nats-Msg-Id"]))
        if not self._unflushed:
            asyncio.get_running_loop().call_soon(self._flush)
        self._unflushed.append((reply, headers["Nats-Msg-Id"]))

    def _flush(self) -> None:
        written, self._unflushed = self._unflushed, []
        self.flushes.append(len(written))
        for reply, msg_id in written:
            data = self.answer(msg_id)
            if data is None:
                continue
            assert self._inbox_cb is not None
            if data is NO_RESPONDERS:
                ack = Msg(cast(Any, None), subject=reply, headers={"Status": "503"})
            else:
                ack = Msg(cast(Any, None), subject=reply, data=data)
            answering = asyncio.ensure_future(self._inbox_cb(ack))
            self._answering.add(answering)
            answering.add_done_callback(self._answering.discard)

    async def drain(self) -> None:
        return None


def bus_over(nats: FakeNats) -> EventBus:
    return EventBus(cast(Any, nats))


def messages(n: int) -> list[Message]:
    return [Message("orders.updates.BTCUSDT", b'{"n":%d}' % i, f"o{i}:1") for i in range(n)]


async def test_a_batch_is_written_whole_and_its_acks_collected_at_once() -> None:
    nats = FakeNats()
    outcomes = await bus_over(nats).publish_batch(messages(50))
    assert outcomes == [None] * 50
    assert nats.flushes == [50]  # every message written before the first ack was awaited
    assert nats.published == messages(50)


async def test_a_batch_reports_each_message_refused_unanswered_or_unsent() -> None:
    def answer(msg_id: str) -> bytes | None:
        return {"o1:1": REFUSED, "o2:1": None, "o3:1": b""}.get(msg_id, ACKED)

    nats = FakeNats(answer)
    outcomes = await bus_over(nats).publish_batch(messages(5), timeout_s=0.2)
    assert outcomes[0] is None and outcomes[4] is None
    assert isinstance(outcomes[1], APIError) and outcomes[1].err_code == 10008
    assert isinstance(outcomes[2], TimeoutError)
    assert isinstance(outcomes[3], APIError)  # an answer that is no ack
    nats = FakeNats()
    nats.fail_publish_at = 2
    outcomes = await bus_over(nats).publish_batch(messages(5))
    assert outcomes[:2] == [None, None]
    assert all(isinstance(o, ConnectionError) for o in outcomes[2:])  # the rest not sent: kept in order
    assert [m.msg_id for m in nats.published] == ["o0:1", "o1:1"]


async def test_no_responders_is_an_error_and_an_ack_after_the_timeout_is_dropped() -> None:
    nats = FakeNats(lambda msg_id: NO_RESPONDERS if msg_id == "o0:1" else None)
    bus = bus_over(nats)
    outcomes = await bus.publish_batch(messages(2), timeout_s=0.1)
    assert isinstance(outcomes[0], NoStreamResponseError)  # no stream takes the subject
    assert isinstance(outcomes[1], TimeoutError)
    await bus._on_ack(Msg(cast(Any, None), subject="_INBOX.fake.0.1", data=ACKED))  # too late: dropped
    nats.answer = lambda _: ACKED
    assert await bus.publish_batch(messages(2)) == [None, None]  # the next batch has its own acks


# --- the relay ---------------------------------------------------------------------------------


async def pending_ids(redis: fakeredis.FakeAsyncRedis) -> list[str]:
    rows = await redis.xpending_range(Outbox(redis).key, RELAY_GROUP, min="-", max="+", count=1000)
    return [cast(bytes, row["message_id"]).decode() for row in rows]


async def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def running(relay: OutboxRelay) -> asyncio.Task[None]:
    return asyncio.create_task(relay.run())


async def stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def relay_over(redis: fakeredis.FakeAsyncRedis, nats: FakeNats, consumer: str = "relay-1") -> OutboxRelay:
    async def connect() -> EventBus:
        return bus_over(nats)

    return OutboxRelay(Outbox(redis), connect, consumer=consumer, block_ms=20)


async def test_the_relay_publishes_a_read_batch_at_once_in_outbox_order_and_acks_it(
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    store = OrderStore(redis)
    await order_lives(store)
    expected = [m for stored in await stored_entries(redis) for m in entry_messages(stored)]
    nats = FakeNats()
    relay = relay_over(redis, nats)
    task = running(relay)
    try:
        await wait_until(lambda: relay.published == 12, "the batch to be published")
        await wait_until(lambda: len(nats.flushes) >= 1, "the flush")
        await asyncio.sleep(0.1)  # the next read acks it
        assert await pending_ids(redis) == []
    finally:
        await stopped(task)
    assert nats.flushes == [len(expected)]  # one batch: written whole, one wait for its acks
    assert [(m.subject, m.msg_id) for m in nats.published] == [(m.subject, m.msg_id) for m in expected]


async def test_entries_nats_did_not_ack_stay_pending_and_go_again_with_the_same_ids_and_bytes(
    redis: fakeredis.FakeAsyncRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "now_ms", lambda: FIXED_NOW_MS)
    store = OrderStore(redis)
    await order_lives(store)
    entries = await stored_entries(redis)
    # NATS stops answering halfway through the batch (its node died, the stream has no leader).
    refused = {m.msg_id for stored in entries[6:] for m in entry_messages(stored)}
    healed = asyncio.Event()

    def answer(msg_id: str) -> bytes | None:
        return ACKED if healed.is_set() or msg_id not in refused else REFUSED

    nats = FakeNats(answer)
    relay = relay_over(redis, nats)
    task = running(relay)
    try:
        await wait_until(lambda: relay.published == 6, "the first half to be acked")
        await wait_until(lambda: len(nats.flushes) >= 2, "a retry")
        # Only what NATS acked is acked in the outbox; the rest waits, retried.
        assert await pending_ids(redis) == [e.entry_id for e in entries[6:]]
        first_try = nats.published[: nats.flushes[0]]
        healed.set()
        await wait_until(lambda: relay.published == 12, "the rest to be published")
        await asyncio.sleep(0.1)
        assert await pending_ids(redis) == []
    finally:
        await stopped(task)
    again = nats.published[nats.flushes[0] :]
    tried = [m for m in first_try if m.msg_id in refused]
    # Each retry sends exactly the unacked entries' messages: same ids, same bytes, same order.
    assert len(again) % len(tried) == 0
    for n in range(0, len(again), len(tried)):
        assert again[n : n + len(tried)] == tried


async def test_a_relay_that_died_before_nats_acked_leaves_the_entries_to_the_next_one_same_ids(
    redis: fakeredis.FakeAsyncRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "now_ms", lambda: FIXED_NOW_MS)
    store = OrderStore(redis)
    await order_lives(store)
    dead = FakeNats(lambda _: REFUSED)  # NATS down: nothing is acked
    first = relay_over(redis, dead, consumer="relay-1")
    task = running(first)
    try:
        await wait_until(lambda: len(dead.flushes) >= 1, "a publish")
    finally:
        await stopped(task)
    outbox_ids = [e.entry_id for e in await stored_entries(redis)]
    assert await pending_ids(redis) == outbox_ids and first.published == 0
    nats = FakeNats()
    second = relay_over(redis, nats, consumer="relay-2")
    task = running(second)
    try:
        await wait_until(lambda: second.published == 12, "the next relay to publish them")
        await asyncio.sleep(0.1)
        assert await pending_ids(redis) == []
    finally:
        await stopped(task)
    assert nats.published == dead.published[: dead.flushes[0]]
