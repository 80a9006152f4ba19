"""A NATS node dies under the outbox relay: every update reaches the replicated stream exactly once.

Real parts only: the servers `up --ha` runs (launcher/ha_servers.py: three nats-server processes
clustered with JetStream, a Redis primary with replicas, on free loopback ports, files in a temp
dir), the primary holding the outbox (the machine's shared Redis and NATS are not touched, so no
lock is needed), and the service's relay (`listener.relay.OutboxRelay`) publishing through
`listener.events.EventBus`, connected as the listener connects, from `nats.servers` and
`nats.replicas` = 3.

Outbox entries are written at a steady rate; once a few hundred are on the stream, the node the
relay is connected to, made the ORDERS stream's leader first, is killed with SIGKILL while
entries keep coming. The relay's connection moves to another node, its unacknowledged
publishes time out and are sent again, and the stream counts each `Nats-Msg-Id` once. Every
process is stopped by pid and the temp dir removed (pytest's tmp_path), on failure too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

import nats
import pytest
import redis.asyncio as aioredis
from nats.aio.client import Client as NatsClient

from order_execution.launcher.ha_servers import HaServers, Server, running_ha_servers
from order_execution.listener.events import DUPLICATE_WINDOW_S, EventBus, update_subject
from order_execution.listener.relay import RELAY_GROUP, OutboxRelay
from order_execution.orders.model import Fill, Order, OrderState
from order_execution.orders.outbox import Outbox, encode_fills
from order_execution.runtime.settings import NatsSettings
from tests.factories import make_order

pytestmark = pytest.mark.integration

NODES = 3
NAMESPACE = "ha-nats"
ORDERS = 150
VERSIONS = 4  # 600 updates; every fourth version records a trade, so 150 fills beside them
KILL_AFTER_PUBLISHED = 200


@pytest.fixture
def ha_servers(tmp_path: Path) -> Iterator[HaServers]:
    """`up --ha`'s servers (launcher/ha_servers.py), stopped by pid afterwards, on failure too."""
    with running_ha_servers(tmp_path) as servers:
        yield servers


@pytest.fixture
async def outbox_redis(ha_servers: HaServers) -> AsyncIterator[aioredis.Redis]:
    """The Redis primary, for the outbox the relay reads (the shared Redis is not touched)."""
    client = aioredis.Redis(
        host="127.0.0.1", port=ha_servers.primary.port, password=ha_servers.redis_password
    )
    try:
        yield client
    finally:
        await client.aclose()


def _url(node: Server) -> str:
    return f"nats://{node.address}"


def _settings(servers: HaServers) -> NatsSettings:
    """What an HA deployment sets: every node (here the credentials in the first URL), 3 replicas."""
    first, *others = servers.nats
    credentials = f"{quote(servers.nats_user, safe='')}:{quote(servers.nats_password, safe='')}"
    return NatsSettings(
        servers=[f"nats://{credentials}@{first.address}", *map(_url, others)], replicas=len(servers.nats)
    )


async def _connect_bus(settings: NatsSettings) -> EventBus:
    """As the listener connects (listener/process.py): the server list, the stream and its replicas."""
    return await EventBus.connect(settings.server_list, stream=settings.stream, replicas=settings.replicas)


async def _write_outbox(client: aioredis.Redis, outbox: Outbox) -> list[str]:
    """Append every order version to the outbox as the store's scripts do, about 200 a second;
    returns the message ids the stream must end up holding, each once."""
    expected: list[str] = []
    for version in range(1, VERSIONS + 1):
        for number in range(ORDERS):
            order = make_order(order_id=f"ha-{number}", version=version)
            fills: tuple[Fill, ...] = ()
            if version == VERSIONS:
                fills = (Fill(f"t{number}", Decimal("0.010"), Decimal("50000")),)
                expected.append(f"{order.order_id}:fill:t{number}")
            fields = {"order": order.to_json(), "was": str(OrderState.NEW), "fills": encode_fills(fills)}
            await client.xadd(outbox.key, fields)  # type: ignore[arg-type]
            expected.append(f"{order.order_id}:{order.version}")
            if number % 10 == 9:
                await asyncio.sleep(0.05)
    return expected


async def _eventually(what: str, check: Callable[[], Awaitable[bool]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} within {timeout_s:.0f} s")
        await asyncio.sleep(0.05)


async def _stream_ids(client: NatsClient, stream: str) -> list[str]:
    """The Nats-Msg-Id of every message in `stream`, in stream order."""
    js = client.jetstream()
    info = await js.stream_info(stream)
    ids = []
    for sequence in range(info.state.first_seq, info.state.last_seq + 1):
        message = await js.get_msg(stream, sequence)
        ids.append((message.headers or {}).get("Nats-Msg-Id", ""))
    return ids


async def _has_update(client: NatsClient, stream: str, order: Order) -> bool:
    try:  # asked often and briefly: a request to a stream electing its leader gets no answer
        await client.jetstream(timeout=0.3).get_last_msg(stream, update_subject(order.symbol))
    except Exception:  # not there yet, or this client is itself reconnecting
        return False
    return True


async def _make_leader(client: NatsClient, stream: str, node: str) -> None:
    """Step the stream's leader down until `node` leads it (each step-down elects another peer)."""
    js = client.jetstream()
    for _ in range(30):
        info = await js.stream_info(stream)
        if info.cluster is not None and info.cluster.leader == node:
            return
        if info.cluster is not None and info.cluster.leader:
            with contextlib.suppress(Exception):  # the reply may be lost in the election it starts
                await client.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"", timeout=2)
        await asyncio.sleep(0.3)
    pytest.fail(f"{node} did not become the leader of {stream}")


async def test_the_relays_node_killed_mid_publish_loses_and_duplicates_nothing(
    ha_servers: HaServers, outbox_redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    nats_cluster = ha_servers.nats
    assert len(nats_cluster) == NODES
    settings = _settings(ha_servers)
    outbox = Outbox(outbox_redis, namespace=NAMESPACE)
    relay = OutboxRelay(outbox, lambda: _connect_bus(settings), consumer="relay-1", block_ms=200)
    relay_task = asyncio.create_task(relay.run())
    checker = await nats.connect(
        list(map(_url, nats_cluster)), user=ha_servers.nats_user, password=ha_servers.nats_password
    )
    writer: asyncio.Task[list[str]] | None = None
    try:

        async def relay_connected() -> bool:
            return relay.nats_connected

        async def published_at_least(count: int) -> bool:
            return relay.published >= count

        await _eventually("connected", relay_connected, 30)
        info = await checker.jetstream().stream_info(settings.stream)
        assert info.config.num_replicas == NODES
        assert info.config.duplicate_window == DUPLICATE_WINDOW_S
        victim = next(n for n in nats_cluster if relay.nats_server == f"127.0.0.1:{n.port}")
        # The worst case: the node the relay is on also leads the stream (a new leader is elected).
        await _make_leader(checker, settings.stream, victim.name)
        writer = asyncio.create_task(_write_outbox(outbox_redis, outbox))
        await _eventually("published", lambda: published_at_least(KILL_AFTER_PUBLISHED), 30)
        assert not writer.done(), "the updates after the kill must come while the relay fails over"
        victim.process.kill()
        killed_at = time.monotonic()
        # An update stored the moment the node died: how long until a subscriber can have it.
        marker = make_order(order_id="at-the-kill", symbol="ETHUSDT", version=1)
        await outbox_redis.xadd(outbox.key, {"order": marker.to_json(), "was": ""})
        await _eventually("on the stream", lambda: _has_update(checker, settings.stream, marker), 30)
        failover_s = time.monotonic() - killed_at

        expected = [*await asyncio.wait_for(writer, 30), "at-the-kill:1"]
        entries = ORDERS * VERSIONS + 1

        async def all_relayed_and_acked() -> bool:
            pending = await outbox_redis.xpending(outbox.key, RELAY_GROUP)
            return relay.published >= entries and pending["pending"] == 0

        await _eventually("relayed", all_relayed_and_acked, 45)
        assert relay.nats_server not in ("", f"127.0.0.1:{victim.port}")

        ids = await _stream_ids(checker, settings.stream)  # read from the two survivors
        repeated = {message_id for message_id, seen in Counter(ids).items() if seen > 1}
        assert not repeated, f"stored twice: {sorted(repeated)[:5]}"
        assert sorted(ids) == sorted(expected)
        info = await checker.jetstream().stream_info(settings.stream)
        assert info.config.num_replicas == NODES and info.state.messages == len(expected)
        assert info.cluster is not None and info.cluster.leader not in ("", victim.name)
        retried = [r for r in caplog.records if "outbox relay: publishing" in r.getMessage()]
        assert retried, "the kill interrupted no publish: nothing was re-published across it"

        # What a relay that died before acking its outbox entries does: publish them again.
        # The new leader remembers their ids, so the stream does not grow.
        bus = await _connect_bus(settings)
        try:
            for number in range(20):
                await bus.publish_update(make_order(order_id=f"ha-{number}", version=1))
        finally:
            await bus.close()
        after = await checker.jetstream().stream_info(settings.stream)
        assert after.state.messages == len(expected)
        print(
            f"\nNATS node {victim.name} killed under the relay: an update stored at the kill was on the "
            "stream "
            f"{failover_s:.1f} s later, "
            f"{len(retried)} publishes retried, {len(expected)} messages each stored once"
        )
    finally:
        tasks = [task for task in (writer, relay_task) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await checker.close()


async def test_a_client_given_one_server_learns_the_others_and_moves_to_them(
    ha_servers: HaServers,
) -> None:
    nats_cluster = ha_servers.nats
    first = nats_cluster[0]
    settings = NatsSettings(address=_url(first), replicas=NODES)
    # A stream made before the cluster setting (one copy): connecting moves it to three.
    earlier = await nats.connect(_url(first), user=ha_servers.nats_user, password=ha_servers.nats_password)
    try:
        await earlier.jetstream().add_stream(name=settings.stream, subjects=["orders.>"], num_replicas=1)
    finally:
        await earlier.close()
    bus = await EventBus.connect(
        settings.server_list,
        stream=settings.stream,
        replicas=settings.replicas,
        user=ha_servers.nats_user,
        password=ha_servers.nats_password,
    )
    try:
        assert bus.server == f"127.0.0.1:{first.port}"
        first.process.kill()
        order = make_order(order_id="discovered", version=1)
        deadline = time.monotonic() + 30
        while True:  # as the relay does: retry until JetStream acks
            try:
                await bus.publish_update(order)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        assert bus.server in {f"127.0.0.1:{n.port}" for n in nats_cluster[1:]}
        checker = await nats.connect(
            list(map(_url, nats_cluster[1:])), user=ha_servers.nats_user, password=ha_servers.nats_password
        )
        try:
            ids = await _stream_ids(checker, settings.stream)
            info = await checker.jetstream().stream_info(settings.stream)
        finally:
            await checker.close()
        assert ids == ["discovered:1"]
        assert info.config.num_replicas == NODES and info.config.duplicate_window == DUPLICATE_WINDOW_S
    finally:
        await bus.close()
