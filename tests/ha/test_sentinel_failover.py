"""The Redis primary dies under Sentinel: the service's own clients fail fast, then follow it.

Real parts only, on loopback ports of this module's own (config files and data in a temp dir,
every process killed by pid, on failure too; the machine's shared Redis is not touched, so no
lock): a primary and two replicas (`replicaof`), with `requirepass`/`masterauth` and
`min-replicas-to-write 1`, `min-replicas-max-lag 10`; three sentinels (`sentinel monitor ... 2`,
`down-after-milliseconds 1000`, `failover-timeout 5000`) with a password of their own.

The clients are the service's: `runtime.redis_connection.open_redis` / `open_sync_redis` with
`redis.sentinels` set, under an `OrderStore`, a `QueueClient` blocked in BLMPOP (the worker's
doorbell wait), an `Outbox` blocked in XREAD (the gateway's update tail), a `LeaderLease` (the
listener's) and Dramatiq's `RedisBroker` (the dashboard's). After kill -9 of the primary,
every call either succeeds or fails within the socket timeout + 1 s with an error the gateway
answers UNAVAILABLE ("failing over" / "unreachable"), never hangs; after the failover the
same client objects write to the new primary and the blocked readers resume there.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dramatiq
import grpc
import pytest
import redis
import redis.asyncio as aioredis
import redis.sentinel
from pydantic import SecretStr

from order_execution.cli.dashboard import dashboard_broker
from order_execution.gateway.status_mapping import status_of
from order_execution.launcher.embedded_servers import ensure_redis
from order_execution.launcher.launch import Launcher
from order_execution.launcher.processes import ManagedProcess, free_port, port_open
from order_execution.launcher.supervisor import Backoff
from order_execution.listener.lease import LeaderLease
from order_execution.orders.errors import StoreUnavailable
from order_execution.orders.outbox import Outbox
from order_execution.orders.store import OrderStore
from order_execution.orders.store_outages import outage_of
from order_execution.runtime.redis_connection import is_cut_off_primary, open_redis, open_sync_redis
from order_execution.runtime.settings import RedisSettings, Settings
from order_execution.tasks.broker import build_broker
from order_execution.tasks.queues import doorbell_key, queue_for, queue_key
from order_execution.tasks.redis_queues import QueueClient
from tests.factories import make_order

pytestmark = pytest.mark.integration

MASTER = "order-execution"
DATA_PASSWORD = "d@ta:p/ss%word"  # characters a URL would mangle: never put in one here
SENTINEL_PASSWORD = "sentinel-only-secret"
SOCKET_TIMEOUT_MS = 1000
# A failing call must end within the socket timeout (a connection to a vanished primary) plus
# a margin for a 2-core machine shared with other test runs; a hang would blow through it.
FAIL_FAST_S = SOCKET_TIMEOUT_MS / 1000 + 1.0
# Sentinel needs down-after (1 s) to see the primary down, then a vote and a promotion: 2-5 s
# here. 20 s is a bound that only a failover that never happens (or a client that never
# re-asks the sentinels) exceeds.
FAILOVER_BOUND_S = 20.0
SYMBOL = "HAFAILOVERUSDT"


def _data_config(port: int, directory: Path, replica_of: int | None) -> str:
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        f'dir "{directory}"',
        'save ""',
        "appendonly no",
        f'requirepass "{DATA_PASSWORD}"',
        f'masterauth "{DATA_PASSWORD}"',
        "min-replicas-to-write 1",
        "min-replicas-max-lag 10",
    ]
    if replica_of is not None:
        lines.append(f"replicaof 127.0.0.1 {replica_of}")
    return "\n".join(lines) + "\n"


def _sentinel_config(port: int, directory: Path, primary_port: int) -> str:
    return (
        "\n".join(
            [
                f"port {port}",
                "bind 127.0.0.1",
                f'dir "{directory}"',
                f'requirepass "{SENTINEL_PASSWORD}"',
                f'sentinel sentinel-pass "{SENTINEL_PASSWORD}"',
                f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2",
                f'sentinel auth-pass {MASTER} "{DATA_PASSWORD}"',
                f"sentinel down-after-milliseconds {MASTER} 1000",
                f"sentinel failover-timeout {MASTER} 5000",
            ]
        )
        + "\n"
    )


@dataclass
class SentinelSet:
    """A primary, two replicas and three sentinels of this test's own."""

    directory: Path
    data: dict[int, ManagedProcess] = field(default_factory=dict)  # port -> redis-server
    sentinels: dict[int, ManagedProcess] = field(default_factory=dict)  # port -> sentinel
    checkers: dict[int, redis.Redis] = field(default_factory=dict)  # port -> the test's own client

    def start_data(self, port: int, replica_of: int | None, *, append_log: bool = False) -> None:
        """Start (or restart, as-is: same config, empty data) the data node on `port`."""
        node_dir = self.directory / f"redis-{port}"
        node_dir.mkdir(exist_ok=True)
        config = node_dir / "redis.conf"
        if not config.exists():
            config.write_text(_data_config(port, node_dir, replica_of))
        process = self.data.get(port) or ManagedProcess(
            f"redis-{port}", ["redis-server", str(config)], log_dir=self.directory
        )
        self.data[port] = process.start(append=append_log)
        process.wait_until("listening", functools.partial(port_open, "127.0.0.1", port), 10)

    def start_sentinel(self, port: int, primary_port: int) -> None:
        config = self.directory / f"sentinel-{port}.conf"  # sentinel rewrites it: a file of its own
        config.write_text(_sentinel_config(port, self.directory, primary_port))
        process = ManagedProcess(
            f"sentinel-{port}", ["redis-server", str(config), "--sentinel"], log_dir=self.directory
        ).start()
        self.sentinels[port] = process
        process.wait_until("listening", functools.partial(port_open, "127.0.0.1", port), 10)

    def settings(self, **changes: Any) -> RedisSettings:
        """The service's settings for this set: sentinels, master name, both passwords."""
        values: dict[str, Any] = {
            "sentinels": [f"127.0.0.1:{port}" for port in self.sentinels],
            "master_name": MASTER,
            "password": SecretStr(DATA_PASSWORD),
            "sentinel_password": SecretStr(SENTINEL_PASSWORD),
            "socket_timeout_ms": SOCKET_TIMEOUT_MS,
            "connect_timeout_ms": SOCKET_TIMEOUT_MS,
        }
        return RedisSettings(**{**values, **changes})

    def node(self, port: int) -> redis.Redis:
        """A plain client straight to one data node (no Sentinel): for checks, not the service."""
        return self._checker(port, DATA_PASSWORD)

    def sentinel(self, port: int) -> redis.Redis:
        return self._checker(port, SENTINEL_PASSWORD)

    def _checker(self, port: int, password: str) -> redis.Redis:
        if port not in self.checkers:
            self.checkers[port] = redis.Redis(
                port=port, password=password, socket_timeout=2, socket_connect_timeout=2
            )
        return self.checkers[port]

    def primary_port(self) -> int | None:
        """The primary's port as a majority of the sentinels name it now (None if they disagree)."""
        named: list[int] = []
        for port in self.sentinels:
            try:
                address = self.sentinel(port).sentinel_get_master_addr_by_name(MASTER)
            except redis.RedisError:
                continue
            if isinstance(address, (list, tuple)):
                named.append(int(address[1]))
        best = max(set(named), key=named.count, default=None)
        return best if best is not None and named.count(best) >= 2 else None

    def ready(self, primary_port: int) -> bool:
        """Every sentinel sees this primary, both replicas and the two other sentinels, and both
        replicas are in sync: only then can a failover be voted and a replica promoted."""
        for port in self.sentinels:
            try:
                state = self.sentinel(port).sentinel_master(MASTER)
            except redis.RedisError:
                return False
            assert isinstance(state, dict)
            if int(state["port"]) != primary_port or state["num-slaves"] != 2:
                return False
            if state["num-other-sentinels"] != 2 or not state["is_master"] or state["is_sdown"]:
                return False
        replicas = self.node(primary_port).info("replication")
        return replicas.get("connected_slaves") == 2 and all(
            replicas[f"slave{i}"]["state"] == "online" for i in range(2)
        )

    def kill(self, port: int) -> None:
        """kill -9 the data node on `port`, as a crash of its machine's Redis would."""
        self.data[port].kill()

    def stop_all(self) -> None:
        for checker in self.checkers.values():
            checker.close()
        for process in [*self.sentinels.values(), *self.data.values()]:
            if process.alive():
                os.kill(process.pid, signal.SIGCONT)  # a node a test froze
            process.stop(timeout_s=5)


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    cluster = SentinelSet(tmp_path)
    try:
        primary, *replicas = free_port(), free_port(), free_port()
        cluster.start_data(primary, None)
        for port in replicas:
            cluster.start_data(port, primary)
        for _ in range(3):
            cluster.start_sentinel(free_port(), primary)
        # Sentinels find each other through hello messages on the primary, every 2 s.
        deadline = time.monotonic() + 30
        while not cluster.ready(primary):
            if time.monotonic() > deadline:
                logs = "\n".join(p.log_tail(8) for p in [*cluster.sentinels.values(), *cluster.data.values()])
                pytest.fail(f"the sentinel set did not come up within 30 s:\n{logs}")
            time.sleep(0.2)
        yield cluster
    finally:
        cluster.stop_all()


async def _timed(call: Awaitable[object]) -> tuple[float, BaseException | None]:
    """How long awaiting `call` took, and what it raised (None: it succeeded)."""
    started = time.monotonic()
    try:
        await call
    except Exception as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


def _assert_store_unavailable(what: str, seconds: float, exc: BaseException) -> None:
    """A failed call during the switch: quick, and the gateway would answer UNAVAILABLE saying why."""
    assert seconds < FAIL_FAST_S, f"{what} took {seconds:.2f} s to fail ({exc!r}: {exc})"
    # Our Redis adapters raise StoreUnavailable; Dramatiq's own broker raises redis-py's error,
    # which the same map (orders.store_outages) names.
    outage = exc if isinstance(exc, StoreUnavailable) else outage_of(exc)
    assert outage is not None, f"{what} raised {type(exc).__name__}: {exc}"
    assert status_of(outage) is grpc.StatusCode.UNAVAILABLE
    assert "order store (Redis)" in str(outage)


async def _wait_for_bell(queues: QueueClient, bell: str) -> str:
    """The worker's doorbell wait (BLMPOP), retried after an outage as the consumer retries it."""
    while True:
        try:
            rung = await queues.wait_for_bell([bell], 1.0)
        except StoreUnavailable:
            await asyncio.sleep(0.2)
            continue
        if rung is not None:
            return rung


async def _tail_after(outbox: Outbox, after_id: str) -> str:
    """The gateway's update tail (XREAD BLOCK), retried after an outage as the hub retries it."""
    while True:
        try:
            entries = await outbox.read_after(after_id, block_ms=1000)
        except StoreUnavailable:
            await asyncio.sleep(0.2)
            continue
        if entries:
            return entries[0].order.order_id


def _noop_message(broker_queue: str, name: str) -> dramatiq.Message[Any]:
    return dramatiq.Message(queue_name=broker_queue, actor_name="noop", args=(name,), kwargs={}, options={})


async def test_a_failover_is_followed_by_the_same_clients(sentinel_set: SentinelSet) -> None:
    namespace = f"ha-{uuid.uuid4().hex[:8]}"
    settings = sentinel_set.settings(namespace=namespace)
    client = open_redis(settings)
    store = OrderStore(client, namespace=namespace)
    lease = LeaderLease(client, namespace=namespace, holder_id="listener-a", ttl_ms=10_000)
    bell_client = open_redis(settings, blocking_reads_ms=1000)
    tail_client = open_redis(settings, blocking_reads_ms=1000)
    queues = QueueClient(bell_client)
    outbox = Outbox(tail_client, namespace=namespace)
    broker = build_broker("", client=open_sync_redis(settings))
    queue = queue_for(SYMBOL)
    broker.declare_queue(queue)
    bell = doorbell_key(queue)

    await store.create(make_order(order_id="before", client_order_id="oe-before"))
    assert await lease.hold()
    broker.enqueue(_noop_message(queue, "before"))
    tail_from = await outbox.last_id()
    assert await client.wait(2, 2000) == 2  # the writes so far are on both replicas before the crash

    bell_waiter = asyncio.create_task(_wait_for_bell(queues, bell))
    tail_waiter = asyncio.create_task(_tail_after(outbox, tail_from))
    await asyncio.sleep(0.3)  # both are blocked on the primary now
    old_primary = sentinel_set.primary_port()
    assert old_primary is not None
    sentinel_set.kill(old_primary)
    killed_at = time.monotonic()

    failures: list[tuple[str, float, BaseException]] = []
    attempt = 0
    while True:
        attempt += 1
        seconds, outcome = await _timed(
            store.create(make_order(order_id=f"after-{attempt}", client_order_id=f"oe-{attempt}"))
        )
        if outcome is None:
            break
        _assert_store_unavailable("OrderStore.create", seconds, outcome)
        failures.append(("create", seconds, outcome))
        seconds, outcome = await _timed(lease.hold())
        if outcome is not None:
            _assert_store_unavailable("LeaderLease.hold", seconds, outcome)
        seconds, outcome = await _timed(
            asyncio.to_thread(broker.enqueue, _noop_message(queue, f"during-{attempt}"))
        )
        if outcome is not None:
            _assert_store_unavailable("RedisBroker.enqueue", seconds, outcome)
        assert time.monotonic() - killed_at < FAILOVER_BOUND_S, f"no failover after {attempt} attempts"
        await asyncio.sleep(0.2)
    failover_s = time.monotonic() - killed_at
    print(f"\nfirst write on the new primary {failover_s:.1f} s after kill -9; {len(failures)} failed fast")
    assert failures, "the kill went unnoticed: the first write after it should have failed"

    new_primary = sentinel_set.primary_port()
    assert new_primary is not None and new_primary != old_primary
    written = f"after-{attempt}"
    async with aioredis.Redis(port=new_primary, password=DATA_PASSWORD, socket_timeout=2) as direct:
        # On the new primary, written there by the same client object.
        assert (await OrderStore(direct, namespace=namespace).get(written)).order_id == written
    assert (await store.get("before")).client_order_id == "oe-before"  # replicated before the crash

    # The lease key came over with the data: the same LeaderLease still holds it.
    assert await lease.hold()
    assert await lease.holder() == "listener-a"
    await asyncio.to_thread(broker.enqueue, _noop_message(queue, "after"))
    queued = sentinel_set.node(new_primary).llen(queue_key(queue))
    assert queued >= 2  # "before" (replicated) and "after", on the new primary

    # The blocked readers were cut off with the old primary; they resume on the new one.
    await client.rpush(bell, 1)
    assert await asyncio.wait_for(bell_waiter, 10) == bell
    assert await asyncio.wait_for(tail_waiter, 10) == written
    for each in (client, bell_client, tail_client):
        await each.aclose()
    broker.client.close()


async def test_a_primary_cut_off_from_its_replicas_refuses_writes(sentinel_set: SentinelSet) -> None:
    """NOREPLICAS (min-replicas-to-write) reaches the service as a quick store outage, not a
    success a failover could take back; writes resume on the same client once replicas return."""
    namespace = f"ha-{uuid.uuid4().hex[:8]}"
    client = open_redis(sentinel_set.settings(namespace=namespace))
    store = OrderStore(client, namespace=namespace)
    await store.create(make_order(order_id="o-ok", client_order_id="oe-ok"))
    primary = sentinel_set.primary_port()
    assert primary is not None
    # 10 s of lag before the primary gives up on a replica is the deployment's value; 2 s keeps
    # the test short and changes nothing else.
    sentinel_set.node(primary).config_set("min-replicas-max-lag", 2)
    frozen = [port for port in sentinel_set.data if port != primary]
    for port in frozen:
        os.kill(sentinel_set.data[port].pid, signal.SIGSTOP)  # the primary's side of a partition
    try:
        deadline = time.monotonic() + 15
        refused: BaseException | None = None
        attempt = 0
        while refused is None:
            assert time.monotonic() < deadline, "the primary kept accepting writes without replicas"
            attempt += 1
            seconds, outcome = await _timed(
                store.create(make_order(order_id=f"o-{attempt}", client_order_id=f"oe-{attempt}"))
            )
            if outcome is not None:
                _assert_store_unavailable("OrderStore.create", seconds, outcome)
                refused = outcome
            await asyncio.sleep(0.3)
        assert "NOREPLICAS" in str(refused)
        # Nothing of the refused write is on the primary.
        assert sentinel_set.node(primary).exists(f"{namespace}:order:o-{attempt}") == 0
    finally:
        for port in frozen:
            os.kill(sentinel_set.data[port].pid, signal.SIGCONT)
    deadline = time.monotonic() + 15
    while True:
        seconds, outcome = await _timed(
            store.create(make_order(order_id="o-back", client_order_id="oe-back"))
        )
        if outcome is None:
            break
        _assert_store_unavailable("OrderStore.create", seconds, outcome)
        assert time.monotonic() < deadline, "writes did not resume once the replicas were back"
        await asyncio.sleep(0.3)
    assert (await store.get("o-back")).order_id == "o-back"
    await client.aclose()


async def test_the_old_primary_restarted_refuses_writes_then_becomes_a_replica(
    sentinel_set: SentinelSet,
) -> None:
    namespace = f"ha-{uuid.uuid4().hex[:8]}"
    client = open_redis(sentinel_set.settings(namespace=namespace))
    store = OrderStore(client, namespace=namespace)
    old_primary = sentinel_set.primary_port()
    assert old_primary is not None
    sentinel_set.kill(old_primary)
    deadline = time.monotonic() + FAILOVER_BOUND_S
    while (new_primary := sentinel_set.primary_port()) in (None, old_primary):
        assert time.monotonic() < deadline, "the sentinels promoted no replica"
        await asyncio.sleep(0.2)
    assert new_primary is not None

    # Restarted as it was: its config still makes it a primary, with no data and no replicas.
    sentinel_set.start_data(old_primary, None, append_log=True)
    stale = sentinel_set.node(old_primary)
    assert stale.info("replication")["role"] == "master"
    with pytest.raises(redis.ResponseError) as refused:
        stale.set(f"{namespace}:written-to-the-old-primary", 1)
    assert is_cut_off_primary(refused.value), str(refused.value)

    # The service's client never writes there: it asks the sentinels, who name the new primary.
    await store.create(make_order(order_id="o-new", client_order_id="oe-new"))

    # Sentinel turns the old primary into a replica of the new one (it waits a few seconds first,
    # to be sure the node still claims to be a primary) and it gets the data.
    deadline = time.monotonic() + 30
    while True:
        replication = stale.info("replication")
        if replication["role"] == "slave" and replication.get("master_link_status") == "up":
            break
        assert time.monotonic() < deadline, f"still {replication['role']} 30 s after its restart"
        await asyncio.sleep(0.3)
    assert int(replication["master_port"]) == new_primary
    assert stale.exists(f"{namespace}:order:o-new") == 1
    await client.aclose()


def test_the_dashboard_and_up_find_the_primary_through_the_sentinels(
    sentinel_set: SentinelSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The threaded users of open_sync_redis: the dashboard's broker answers /health from the
    primary the sentinels name, and `up` starts no Redis of its own beside configured sentinels
    (it says which primary it uses, or fails naming the settings to check)."""
    monkeypatch.chdir(tmp_path)  # no stray ./config.yaml
    settings = Settings(redis=sentinel_set.settings())

    def start_nothing(process: ManagedProcess, *, backoff: Backoff | None = None) -> ManagedProcess:
        raise AssertionError(f"up started {process.name} although redis.sentinels is set")

    env, line = ensure_redis(settings, Launcher(tmp_path, start=start_nothing), tmp_path)
    assert env == {} and f"primary {MASTER!r} through the sentinels" in line

    broker = dashboard_broker(settings)
    assert broker.client.ping()
    primary = sentinel_set.primary_port()
    pool = broker.client.connection_pool
    assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
    assert pool.master_address is not None and pool.master_address[1] == primary  # where ping went
    broker.client.close()

    wrong = Settings(redis=sentinel_set.settings(master_name="no-such-primary"))
    with pytest.raises(RuntimeError, match="no primary 'no-such-primary' answers"):
        ensure_redis(wrong, Launcher(tmp_path, start=start_nothing), tmp_path)
