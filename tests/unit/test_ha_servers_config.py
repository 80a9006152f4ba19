"""The config files `up --ha` writes for its servers (launcher/ha_server_configs.py), the settings env
it hands the service (launcher/ha_servers.py), and which node a restart makes the primary.
Real servers reading these files: tests/ha/test_ha_servers.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from order_execution.launcher.ha_server_configs import (
    last_primary,
    nats_node_config,
    redis_node_config,
    sentinel_config,
)
from order_execution.launcher.ha_servers import OTHER_RESTART, REDIS_NODE_RESTART, HaServers, Server
from order_execution.launcher.processes import ManagedProcess
from order_execution.launcher.supervisor import Supervisor
from order_execution.runtime.settings import load_settings


def _directives(text: str) -> dict[str, str]:
    """Redis config lines as {directive: rest}, comments left out (the last of a repeated one wins)."""
    lines = [line.split(maxsplit=1) for line in text.splitlines() if line and not line.startswith("#")]
    return {words[0]: words[1] if len(words) > 1 else "" for words in lines}


def test_the_primary_has_no_replicaof_and_refuses_writes_without_a_replica() -> None:
    conf = _directives(redis_node_config("pw-1", None))
    assert "replicaof" not in conf
    assert conf["requirepass"] == '"pw-1"' and conf["masterauth"] == '"pw-1"'
    assert conf["min-replicas-to-write"] == "1" and conf["min-replicas-max-lag"] == "10"


def test_a_replica_follows_the_primary_with_its_password() -> None:
    conf = _directives(redis_node_config("pw-1", 7001))
    assert conf["replicaof"] == "127.0.0.1 7001"
    assert conf["masterauth"] == '"pw-1"'
    # Any replica may be promoted: it carries the same write guard.
    assert conf["min-replicas-to-write"] == "1"


def test_a_sentinel_monitors_the_primary_with_quorum_two_and_both_passwords(tmp_path: Path) -> None:
    text = sentinel_config(
        26001,
        tmp_path,
        master_name="order-execution",
        primary_port=7001,
        redis_password="data-pw",
        sentinel_password="sentinel-pw",
    )
    lines = text.splitlines()
    assert "bind 127.0.0.1" in lines and "port 26001" in lines
    assert "sentinel monitor order-execution 127.0.0.1 7001 2" in lines
    assert 'sentinel auth-pass order-execution "data-pw"' in lines
    assert 'requirepass "sentinel-pw"' in lines and 'sentinel sentinel-pass "sentinel-pw"' in lines
    assert "sentinel down-after-milliseconds order-execution 2000" in lines
    assert "sentinel failover-timeout order-execution 5000" in lines
    # The master's options come after `sentinel monitor` (Sentinel refuses them before).
    monitor = lines.index("sentinel monitor order-execution 127.0.0.1 7001 2")
    assert all(
        i >= monitor
        for i, line in enumerate(lines)
        if line.startswith("sentinel ") and " order-execution " in line
    )
    assert f'dir "{tmp_path}"' in lines


def test_a_nats_node_routes_to_the_other_two_with_the_route_login() -> None:
    text = nats_node_config(
        "nats-2",
        4302,
        6302,
        ["127.0.0.1:6301", "127.0.0.1:6303"],
        password="client-pw",
        route_password="r/p@ss",
    )
    assert 'server_name: "nats-2"' in text and 'listen: "127.0.0.1:4302"' in text
    assert 'listen: "127.0.0.1:6302"' in text and 'name: "order-execution"' in text
    routes = re.findall(r'"(nats-route://[^"]+)"', text)
    assert [urlsplit(route).port for route in routes] == [6301, 6303]  # not itself
    for route in routes:
        parts = urlsplit(route)
        assert parts.hostname == "127.0.0.1"
        assert (parts.username, unquote(parts.password or "")) == ("route", "r/p@ss")  # encoded in the URL
    assert 'user: "order-execution"\n  password: "client-pw"' in text


def test_a_restart_makes_the_node_the_sentinels_last_named_the_primary(tmp_path: Path) -> None:
    assert last_primary(tmp_path) is None  # first start
    (tmp_path / "nodes.json").write_text(json.dumps({"redis-1": 7001, "redis-2": 7002, "redis-3": 7003}))
    (tmp_path / "sentinel-1.conf").write_text(
        "port 26001\nsentinel monitor order-execution 127.0.0.1 7002 2\n"
    )
    assert last_primary(tmp_path) == "redis-2"
    (tmp_path / "sentinel-1.conf").write_text("sentinel monitor order-execution 127.0.0.1 9999 2\n")
    assert last_primary(tmp_path) is None  # a port of no node of ours


def _server(name: str, port: int) -> Server:
    return Server(name, port, ManagedProcess(name, ["true"]))


def test_the_settings_env_reads_back_as_the_agreed_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    servers = HaServers(
        tmp_path,
        redis=[_server("redis-2", 7002), _server("redis-1", 7001), _server("redis-3", 7003)],
        sentinels=[_server(f"sentinel-{i}", 26000 + i) for i in (1, 2, 3)],
        nats=[_server(f"nats-{i}", 4300 + i) for i in (1, 2, 3)],
        redis_password="data:pw@1",
        sentinel_password="sentinel-pw",
        nats_password="nats-pw",
    )
    for name, value in servers.env().items():
        monkeypatch.setenv(name, value)
    config = tmp_path / "config.yaml"
    config.write_text("{}\n")
    settings = load_settings(config)
    assert settings.redis.address == "127.0.0.1:7002"  # the primary, for a process without Sentinel
    assert settings.redis.password.get_secret_value() == "data:pw@1"
    assert settings.redis.sentinels == ["127.0.0.1:26001", "127.0.0.1:26002", "127.0.0.1:26003"]
    assert settings.redis.master_name == "order-execution"
    assert settings.redis.sentinel_password.get_secret_value() == "sentinel-pw"
    assert settings.redis.min_replica_acks == 1
    urls = ["nats://127.0.0.1:4301", "nats://127.0.0.1:4302", "nats://127.0.0.1:4303"]
    assert settings.nats.servers == urls and settings.nats.replicas == 3
    assert (settings.nats.user, settings.nats.password.get_secret_value()) == ("order-execution", "nats-pw")


def test_a_redis_node_is_restarted_only_after_the_sentinels_had_time_to_fail_over(tmp_path: Path) -> None:
    """`up --ha` supervises each server with the Backoff start_ha_servers hands it: a dead Redis
    node waits 10 s (the sentinels promote a replica first), any other process the usual 0.5 s."""
    reports: list[str] = []
    now = [0.0]
    supervisor = Supervisor(clock=lambda: now[0], report=reports.append)
    node = supervisor.start(ManagedProcess("redis-1", ["true"], log_dir=tmp_path), backoff=REDIS_NODE_RESTART)
    other = supervisor.start(ManagedProcess("nats-1", ["true"], log_dir=tmp_path), backoff=OTHER_RESTART)
    try:
        for process in (node, other):
            assert process.process is not None
            process.process.wait(timeout=10)
        supervisor.poll()
        assert any(line.startswith("redis-1 exited") and "restarting in 10.0 s" in line for line in reports)
        assert any(line.startswith("nats-1 exited") and "restarting in 0.5 s" in line for line in reports)
        now[0] = 5.0
        supervisor.poll()
        assert supervisor.restarts("redis-1") == 1 and not node.alive() and node.returncode == 0  # not yet
    finally:
        supervisor.stop()
