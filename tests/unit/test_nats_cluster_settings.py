"""nats.servers and nats.replicas: how they are read, what the clients are given, what `up` does
with a cluster, and the /health NATS probe over several servers (real sockets on loopback)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from order_execution.gateway.health import probe_nats_servers
from order_execution.launcher.embedded_servers import ensure_nats
from order_execution.launcher.launch import Launcher
from order_execution.launcher.processes import ManagedProcess, free_port
from order_execution.launcher.supervisor import Backoff
from order_execution.runtime.addresses import nats_servers
from order_execution.runtime.settings import NatsSettings, Settings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NATS_ADDRESS", raising=False)
    monkeypatch.delenv("ORDER_EXECUTION_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no stray ./config.yaml


def test_by_default_one_server_and_one_replica_as_before() -> None:
    nats = load_settings().nats
    assert nats.servers == [] and nats.replicas == 1
    assert nats.server_list == nats.address == "nats://localhost:4222"


def test_without_servers_the_address_keeps_its_comma_separated_form_and_credentials() -> None:
    nats = NatsSettings(address="nats://order:p%40ss@10.0.0.1:4222, nats://10.0.0.2:4222")
    servers = nats_servers(nats.server_list)
    assert servers.urls == ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]
    assert (servers.user, servers.password) == ("order", "p@ss")


def test_servers_from_the_environment_win_over_the_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "ORDER_EXECUTION__NATS__SERVERS",
        '["nats://order:p%40ss@127.0.0.1:4301", "nats://127.0.0.1:4302", "nats://127.0.0.1:4303"]',
    )
    monkeypatch.setenv("ORDER_EXECUTION__NATS__REPLICAS", "3")
    nats = load_settings().nats
    assert nats.replicas == 3
    servers = nats_servers(nats.server_list)
    assert servers.urls == [f"nats://127.0.0.1:{port}" for port in (4301, 4302, 4303)]
    assert (servers.user, servers.password) == ("order", "p@ss")


def test_servers_and_replicas_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("nats:\n  servers: [nats://10.0.0.1:4222, nats://10.0.0.2:4222]\n  replicas: 3\n")
    nats = load_settings(path).nats
    assert nats.server_list == "nats://10.0.0.1:4222,nats://10.0.0.2:4222" and nats.replicas == 3


@pytest.mark.parametrize("replicas", ["0", "6", "three"])
def test_a_replica_count_outside_1_to_5_is_refused_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, replicas: str
) -> None:
    monkeypatch.setenv("ORDER_EXECUTION__NATS__REPLICAS", replicas)
    with pytest.raises(SettingsError, match=r"nats\.replicas"):
        load_settings()


def test_a_bad_server_is_refused_naming_which_without_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "ORDER_EXECUTION__NATS__SERVERS", '["nats://127.0.0.1:4222", "nats://order:s3cretpass@host:port"]'
    )
    with pytest.raises(SettingsError, match="#2") as refused:
        load_settings()
    assert "s3cretpass" not in str(refused.value)


@pytest.fixture
async def nats_greeter() -> AsyncIterator[int]:
    """A loopback port that greets like a NATS server (an INFO line), as the probe needs."""

    async def greet(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b'INFO {"server_id":"test"}\r\n')
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def test_the_probe_is_healthy_while_one_server_answers_and_names_the_one_that_does_not(
    nats_greeter: int,
) -> None:
    closed = free_port()
    detail = await probe_nats_servers(f"nats://127.0.0.1:{closed},nats://127.0.0.1:{nats_greeter}", 1.0)
    assert detail.startswith(f"127.0.0.1:{nats_greeter} (1 of 2 answer;")
    assert f"127.0.0.1:{closed}:" in detail
    assert await probe_nats_servers(f"nats://127.0.0.1:{nats_greeter}", 1.0) == f"127.0.0.1:{nats_greeter}"


async def test_the_probe_fails_naming_every_server_when_none_answers() -> None:
    first, second = free_port(), free_port()
    with pytest.raises(ConnectionError) as failed:
        await probe_nats_servers(f"nats://u:pw@127.0.0.1:{first}, nats://127.0.0.1:{second}", 1.0)
    assert f"127.0.0.1:{first}:" in str(failed.value) and f"127.0.0.1:{second}:" in str(failed.value)
    assert "pw" not in str(failed.value)


async def test_a_silent_server_costs_the_probe_no_more_than_its_timeout(nats_greeter: int) -> None:
    done = asyncio.Event()

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await done.wait()  # accepts, never greets
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        try:
            detail = await asyncio.wait_for(
                probe_nats_servers(f"nats://127.0.0.1:{port},nats://127.0.0.1:{nats_greeter}", 0.3), 5
            )
        finally:
            done.set()
    assert f"127.0.0.1:{port}: no greeting within" in detail


def test_up_uses_a_configured_cluster_and_starts_no_nats_of_its_own(tmp_path: Path) -> None:
    def start_nothing(process: ManagedProcess, *, backoff: Backoff | None = None) -> ManagedProcess:
        raise AssertionError(f"up started {process.name} although nats.servers is set")

    down = free_port()
    with socket.create_server(("127.0.0.1", 0)) as listening:
        up_port = listening.getsockname()[1]
        settings = Settings(
            nats=NatsSettings(servers=[f"nats://127.0.0.1:{down}", f"nats://127.0.0.1:{up_port}"])
        )
        env, line = ensure_nats(settings, Launcher(tmp_path, start=start_nothing), tmp_path)
    assert env == {} and "1 of 2 answer" in line
    with pytest.raises(RuntimeError, match=r"none of nats\.servers answers"):
        ensure_nats(settings, Launcher(tmp_path, start=start_nothing), tmp_path)
