"""`launcher/ha_servers.py` against real servers: a Redis primary, two replicas, three sentinels and a
3-node NATS cluster on free loopback ports, started, found healthy, closed to a client without
the password, failed over when the primary is killed, and gone (every pid) after the stop.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
import redis

from order_execution.launcher.embedded_servers import nats_server_binary
from order_execution.launcher.ha_servers import HaServers, running_ha_servers
from order_execution.launcher.processes import port_open
from order_execution.runtime.settings import load_settings

pytestmark = pytest.mark.integration

# Sentinel's down-after is 2 s and a failover takes a few more; 30 s leaves room on a loaded
# 2-core machine without letting a failover that never comes pass.
FAILOVER_BOUND_S = 30.0


def require_binaries() -> None:
    missing = [
        name
        for name, found in (
            ("redis-server", shutil.which("redis-server")),
            ("nats-server", nats_server_binary()),
        )
        if not found
    ]
    if missing:
        message = f"{' and '.join(missing)} not found"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HaServers]:
    require_binaries()
    with running_ha_servers(tmp_path_factory.mktemp("ha")) as started:
        yield started


def _alive(pid: int) -> bool:
    """Running (a zombie counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_the_primary_replicates_to_both_replicas(servers: HaServers) -> None:
    with redis.Redis(port=servers.primary.port, password=servers.redis_password) as primary:
        info = primary.info("replication")
        assert info["role"] == "master" and info["connected_slaves"] == 2
        primary.set("ha-test", "written-on-the-primary")
        assert primary.wait(2, 5000) == 2  # both replicas have it
    for replica in servers.replicas:
        with redis.Redis(port=replica.port, password=servers.redis_password) as client:
            assert client.info("replication")["role"] == "slave"
            assert client.get("ha-test") == b"written-on-the-primary"
            with pytest.raises(redis.ReadOnlyError):
                client.set("ha-test", "written-on-a-replica")


def test_every_sentinel_names_the_primary_and_sees_the_others(servers: HaServers) -> None:
    for sentinel in servers.sentinels:
        with redis.Redis(port=sentinel.port, password=servers.sentinel_password, decode_responses=True) as c:
            master = c.sentinel_master(servers.master_name)
            assert (master["ip"], int(master["port"])) == ("127.0.0.1", servers.primary.port)
            assert master["num-slaves"] == 2 and master["num-other-sentinels"] == 2
            assert master["quorum"] == 2
    assert servers.primary_now() == ("127.0.0.1", servers.primary.port)


def test_the_nats_cluster_holds_a_stream_replicated_three_times(servers: HaServers) -> None:
    async def check() -> None:
        first = await nats.connect(
            servers.nats_urls[0], user=servers.nats_user, password=servers.nats_password
        )
        last = await nats.connect(
            servers.nats_urls[2], user=servers.nats_user, password=servers.nats_password
        )
        try:
            js = first.jetstream()
            info = await js.add_stream(name="HA_TEST", subjects=["ha-test.>"], num_replicas=3)
            assert info.config.num_replicas == 3
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2  # leader + 2
            ack = await js.publish("ha-test.one", b"hello", headers={"Nats-Msg-Id": "order-1:1"})
            again = await js.publish("ha-test.one", b"hello", headers={"Nats-Msg-Id": "order-1:1"})
            assert again.duplicate and again.seq == ack.seq  # deduplicated by message id
            message = await last.jetstream().get_msg("HA_TEST", ack.seq)  # read through another node
            assert message.data == b"hello"
        finally:
            await first.close()
            await last.close()

    asyncio.run(check())


def _answer(port: int, command: bytes) -> bytes:
    """The first reply line of a Redis server or sentinel to `command`, over a bare socket."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(command + b"\r\n")
        return sock.recv(200).split(b"\r\n")[0]


def test_a_client_without_the_password_is_refused(servers: HaServers) -> None:
    reads = [(node, b"GET ha-test") for node in servers.redis]
    reads += [(sentinel, b"SENTINEL MASTERS") for sentinel in servers.sentinels]
    for server, read in reads:
        assert _answer(server.port, b"PING").startswith(b"-NOAUTH"), server.name
        assert _answer(server.port, b"AUTH wrong").startswith(b"-WRONGPASS"), server.name
        assert _answer(server.port, read).startswith(b"-NOAUTH"), server.name

    for node in servers.nats:  # the client protocol: the server's INFO, then our CONNECT
        with socket.create_connection(("127.0.0.1", node.port), timeout=5) as sock:
            assert sock.recv(4096).startswith(b"INFO ")
            sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
            assert b"-ERR 'Authorization Violation'" in sock.recv(4096), node.name


def test_secrets_stay_in_private_files_and_off_command_lines(servers: HaServers) -> None:
    assert stat.S_IMODE(servers.run_dir.stat().st_mode) == 0o700
    for path in servers.run_dir.glob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    secrets = (servers.redis_password, servers.sentinel_password, servers.nats_password)
    for process in servers.processes:
        command_line = Path(f"/proc/{process.pid}/cmdline").read_bytes().decode(errors="replace")
        assert not any(secret in command_line for secret in secrets), process.name


def test_the_settings_env_points_the_service_at_the_cluster(
    servers: HaServers, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in servers.env().items():
        monkeypatch.setenv(name, value)
    empty = tmp_path / "config.yaml"
    empty.write_text("{}\n")
    settings = load_settings(empty)
    assert settings.redis.sentinels == servers.sentinel_addresses
    assert settings.redis.master_name == "order-execution"
    assert settings.redis.sentinel_password.get_secret_value() == servers.sentinel_password
    assert settings.redis.password.get_secret_value() == servers.redis_password
    assert settings.redis.min_replica_acks == 1
    assert settings.nats.servers == servers.nats_urls and settings.nats.replicas == 3


def test_killing_the_primary_promotes_a_replica_that_takes_writes(tmp_path: Path) -> None:
    """Its own servers: the module's cluster stays as it started for the other tests."""
    require_binaries()
    with running_ha_servers(tmp_path) as servers:
        old = servers.primary
        old.process.kill()
        killed_at = time.monotonic()
        while time.monotonic() - killed_at < FAILOVER_BOUND_S:
            _, port = servers.primary_now()
            if port != old.port:
                break
            time.sleep(0.1)
        promoted_after_s = time.monotonic() - killed_at
        assert port in [replica.port for replica in servers.replicas], "no replica was promoted"
        # The new primary takes a write once the other replica follows it (min-replicas-to-write 1).
        with redis.Redis(port=port, password=servers.redis_password, socket_timeout=2) as primary:
            while True:
                try:
                    primary.set("after-failover", "yes")
                    break
                except (redis.ReadOnlyError, redis.ResponseError):  # still a replica, or NOREPLICAS
                    assert time.monotonic() - killed_at < FAILOVER_BOUND_S, (
                        "the new primary never took a write"
                    )
                    time.sleep(0.1)
            writable_after_s = time.monotonic() - killed_at
            assert primary.wait(1, 5000) == 1
        print(f"\nRedis primary killed: promoted {promoted_after_s:.1f} s, writable {writable_after_s:.1f} s")


def test_everything_is_gone_after_the_stop(tmp_path: Path) -> None:
    require_binaries()
    with running_ha_servers(tmp_path) as servers:
        pids = [process.pid for process in servers.processes]
        ports = [server.port for server in (*servers.redis, *servers.sentinels, *servers.nats)]
        assert all(_alive(pid) for pid in pids)
    assert not any(_alive(pid) for pid in pids)
    assert not any(port_open("127.0.0.1", port) for port in ports)


def test_a_restart_keeps_the_primary_the_sentinels_chose(tmp_path: Path) -> None:
    """After a failover and a stop, the next start makes the promoted node the primary again,
    with the data written to it (not the old primary's older copy)."""
    require_binaries()
    with running_ha_servers(tmp_path) as servers:
        servers.primary.process.kill()
        deadline = time.monotonic() + FAILOVER_BOUND_S
        while servers.primary_now()[1] == servers.primary.port:
            assert time.monotonic() < deadline, "no failover"
            time.sleep(0.1)
        promoted = next(node for node in servers.replicas if node.port == servers.primary_now()[1])
        with redis.Redis(port=promoted.port, password=servers.redis_password) as primary:
            while True:
                try:
                    primary.set("written-after-failover", "kept")
                    break
                except redis.ResponseError:  # NOREPLICAS until the other replica follows
                    assert time.monotonic() < deadline, "the promoted node never took a write"
                    time.sleep(0.1)
            assert primary.wait(1, 5000) == 1
    with running_ha_servers(tmp_path) as again:
        assert again.primary.name == promoted.name
        with redis.Redis(port=again.primary.port, password=again.redis_password) as primary:
            assert primary.get("written-after-failover") == b"kept"
