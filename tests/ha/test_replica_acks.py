"""Acknowledged means replicated, against a real Redis primary and replica on free loopback ports.

The servers are this module's own (temp dirs, started and killed by pid), not the shared
127.0.0.1:6379, so no lock is needed. The replica is frozen with SIGSTOP (and always continued
in `finally`): it stays connected, as a replica on a stalled or partitioned host does, but
acknowledges nothing.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fakeredis
import grpc
import pytest
import redis
import redis.asyncio as aioredis

from order_execution.gateway.updates import UpdateHub
from order_execution.launcher.processes import free_port
from order_execution.orders.replicas import ReplicaAcks
from order_execution.orders.store import OrderStore
from tests import factories
from tests.unit.gateway_harness import limit_order, running_gateway

pytestmark = pytest.mark.integration

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
ACK_TIMEOUT_MS = 300


@dataclass
class Pair:
    primary_port: int
    replica_port: int
    replica_pid: int

    @contextmanager
    def replica_frozen(self) -> Iterator[None]:
        """The replica stopped (SIGSTOP) for the block, continued (SIGCONT) whatever happens."""
        os.kill(self.replica_pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.replica_pid, signal.SIGCONT)


def _start(port: int, directory: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *(REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)),
            *("--save", "", "--appendonly", "no", "--protected-mode", "yes", *extra),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _replica_online(primary_port: int, deadline_s: float) -> None:
    client = redis.Redis(port=primary_port, host="127.0.0.1", socket_timeout=1)
    try:
        while time.monotonic() < deadline_s:
            try:
                info = client.info("replication")
                if info.get("connected_slaves") == 1 and info.get("slave0", {}).get("state") == "online":
                    return
            except redis.exceptions.ConnectionError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the replica did not come online within 10 s")
    finally:
        client.close()


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    if not os.path.exists(REDIS_SERVER):
        pytest.skip("redis-server not installed")
    directory = Path(tempfile.mkdtemp(prefix="oe-replica-acks-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        primary_port, replica_port = free_port(), free_port()
        (directory / "primary").mkdir()
        (directory / "replica").mkdir()
        processes.append(_start(primary_port, directory / "primary"))
        replica = _start(replica_port, directory / "replica", "--replicaof", "127.0.0.1", str(primary_port))
        processes.append(replica)
        _replica_online(primary_port, time.monotonic() + 10)
        yield Pair(primary_port, replica_port, replica.pid)
    finally:
        for process in processes:  # by pid; a frozen replica is continued first
            os.kill(process.pid, signal.SIGCONT)
            process.kill()
            process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def primary(pair: Pair) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(host="127.0.0.1", port=pair.primary_port, socket_timeout=5)
    await client.flushall()
    yield client
    await client.aclose()


async def _caught_up(pair: Pair) -> None:
    """Wait (up to 10 s) until the replica acknowledged everything the primary has."""
    client = aioredis.Redis(host="127.0.0.1", port=pair.primary_port, socket_timeout=5)
    try:
        for _ in range(100):
            if await client.wait(1, 100) >= 1:
                return
        raise AssertionError("the replica did not catch up within 10 s")
    finally:
        await client.aclose()


async def test_create_answers_once_replicated_and_unavailable_naming_the_client_id_when_not(
    pair: Pair, primary: aioredis.Redis
) -> None:
    rules = fakeredis.FakeAsyncRedis()
    acks = ReplicaAcks(needed=1, timeout_ms=ACK_TIMEOUT_MS)
    async with running_gateway(primary, rules, replica_acks=acks) as stub:
        first = await stub.CreateOrder(limit_order(client_order_id="replicated-1"))
        assert first.order_id

        request = limit_order(client_order_id="frozen-replica-1")
        with pair.replica_frozen():
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.CreateOrder(request)
            took_s = time.monotonic() - started
        details = refused.value.details() or ""
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "retry with client_order_id 'frozen-replica-1'" in details
        assert f"confirmed by 0 of 1 replicas within {ACK_TIMEOUT_MS} ms" in details
        # About the ack timeout (0.3 s); 3 s is wide for a loaded 2-core machine, and still far
        # from a hang (the socket timeout is 5 s here).
        assert took_s < 3.0, took_s
        stored_id = re.search(r"order (\S+) stored on the primary", details)
        assert stored_id is not None, details

        await _caught_up(pair)
        retry = await stub.CreateOrder(request)
        assert retry.order_id == stored_id.group(1)  # the same order, now on the replica too
    await rules.aclose()


async def test_the_stream_tail_delivers_a_version_only_once_the_replica_has_it(
    pair: Pair, primary: aioredis.Redis
) -> None:
    writer = OrderStore(primary)  # writes on the primary without waiting: the tail must do it
    probe = OrderStore(primary, replica_acks=ReplicaAcks(needed=1, timeout_ms=ACK_TIMEOUT_MS)).replica_probe(
        "gateway-tail"
    )
    # A short timeout: a read of the frozen replica (if the tail let an entry through) must not stall.
    replica = aioredis.Redis(host="127.0.0.1", port=pair.replica_port, socket_timeout=0.5)
    hub = UpdateHub(writer.outbox, replicas=probe)
    await hub.start(wait_s=5.0)
    got: list[Any] = []
    on_replica_when_delivered: list[bool] = []

    async def read(updates: AsyncIterator[Any]) -> None:
        async for entry in updates:
            got.append(entry)
            try:
                stored = await replica.hget(f"oe:order:{entry.order.order_id}", "version")
            except redis.exceptions.TimeoutError:
                stored = None
            on_replica_when_delivered.append(stored is not None and int(stored) >= entry.order.version)

    reader: asyncio.Task[None] | None = None
    try:
        async with hub.subscribe(()) as updates:
            reader = asyncio.create_task(read(updates))
            with pair.replica_frozen():
                order = (await writer.create(factories.make_order(order_id="tail-1"))).order
                await asyncio.sleep(1.5)  # five ack timeouts: the tail holds it all along
                assert got == []
            for _ in range(100):  # the replica catches up within ms once continued; 10 s is wide
                if on_replica_when_delivered:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.3)
        assert [(e.order.order_id, e.order.version) for e in got] == [(order.order_id, 1)]
        assert on_replica_when_delivered == [True]
    finally:
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        await hub.stop()
        await replica.aclose()
