"""`order-execution up` as a user runs it, with its own Redis and NATS (nothing answers where
the settings point, so it starts both): every port its processes listen on is on 127.0.0.1,
its Redis and NATS refuse a client without the password and serve one with it, `.run/` and
its secrets are owner-only, and a kill -9 of `up` takes every child with it.

The listening sockets are read from /proc (each process's socket inodes matched against
/proc/net/tcp and tcp6), as `ss -ltnp` would show them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
import redis

from order_execution.launcher.embedded_servers import NATS_USER
from order_execution.launcher.processes import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# Generous: on a loaded 2-core machine `up` starts nine processes, each importing the service.
START_TIMEOUT_S = 180
UP_MARK = "Ctrl-C stops everything."


@dataclass
class UpRun:
    process: subprocess.Popen[bytes]
    run_dir: Path
    output: Path
    grpc_port: int
    http_port: int

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def printed_port(self, row: str) -> int:
        found = re.search(rf"^\s+{row}\s+\S*?127\.0\.0\.1:(\d+)", self.text(), re.MULTILINE)
        assert found, f"no {row} row in `up`'s output:\n{self.text()}"
        return int(found.group(1))


def process_tree(root: int) -> list[int]:
    """`root` and every descendant alive now (from /proc/*/stat's parent pids)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    tree, frontier = [root], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        tree += children
        frontier = children
    return tree


def alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def _address(hex_address: str) -> str:
    """/proc/net/tcp's little-endian hex address as text (IPv4, or IPv6 in four 32-bit words;
    an IPv4-mapped IPv6 address, as gRPC binds 127.0.0.1, as its IPv4 address)."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if len(words) == 4:
        return str(ipaddress.IPv4Address(words))
    address = ipaddress.IPv6Address(words)
    return str(address.ipv4_mapped or address)


def listening(pids: list[int]) -> dict[int, str]:
    """port -> local address of every listening TCP socket the processes `pids` hold."""
    inodes = set().union(*(_socket_inodes(pid) for pid in pids))
    found: dict[int, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                host, port = local.split(":")
                found[int(port, 16)] = _address(host)
    return found


def up_env(
    grpc_port: int, http_port: int, worker_metrics: int, listener_metrics: int, dashboard: int
) -> dict[str, str]:
    """The environment a test runs `up` with: this one without any of the service's settings, the
    given ports, and nothing at the Redis and NATS addresses (`up` starts its own)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("ORDER_EXECUTION", "REDIS_", "NATS_", "BINANCE_"))
    }
    env.update(
        PYTHONPATH=str(REPO),
        ORDER_EXECUTION_CONFIG="",
        REDIS_ADDRESS=f"127.0.0.1:{free_port()}",
        NATS_ADDRESS=f"nats://127.0.0.1:{free_port()}",
        ORDER_EXECUTION__SERVER__GRPC_PORT=str(grpc_port),
        ORDER_EXECUTION__SERVER__HTTP_PORT=str(http_port),
        ORDER_EXECUTION__MONITORING__WORKER_METRICS_PORT=str(worker_metrics),
        ORDER_EXECUTION__MONITORING__LISTENER_METRICS_PORT=str(listener_metrics),
        ORDER_EXECUTION__DASHBOARD__PORT=str(dashboard),
        LOG_FORMAT="text",
    )
    return env


@contextlib.contextmanager
def running_up(tmp_path: Path) -> Iterator[UpRun]:
    """`up --workers 1` in `tmp_path` with free ports and nothing at its Redis and NATS addresses."""
    grpc_port, http_port = free_port(), free_port()
    env = up_env(grpc_port, http_port, free_port(), free_port(), free_port())
    output = tmp_path / "up.out"
    with output.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "order_execution.cli", "up", "--workers", "1"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    run = UpRun(process, tmp_path / ".run", output, grpc_port, http_port)
    started: list[int] = []
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while UP_MARK not in run.text():
            assert process.poll() is None, f"`up` exited ({process.returncode}):\n{run.text()}"
            assert time.monotonic() < deadline, f"`up` not up after {START_TIMEOUT_S} s:\n{run.text()}"
            time.sleep(0.5)
        started = process_tree(process.pid)
        yield run
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # `up` stops its children in reverse order
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=60)
        for pid in started:  # whatever is still running, by pid
            if pid != process.pid and alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_everything_up_starts_listens_on_loopback_and_its_servers_want_the_password(
    tmp_path: Path,
) -> None:
    with running_up(tmp_path) as run:
        pids = process_tree(run.process.pid)
        ports = listening(pids)
        redis_port, nats_port = run.printed_port("Redis"), run.printed_port("NATS")
        # Gateway gRPC + HTTP, worker and listener metrics, dashboard, simulator, Redis, NATS.
        assert {run.grpc_port, run.http_port, redis_port, nats_port} <= set(ports)
        assert len(ports) >= 8, ports
        assert {address for address in ports.values()} == {"127.0.0.1"}, ports

        redis_password = (run.run_dir / "redis-password").read_text().strip()
        nats_password = (run.run_dir / "nats-password").read_text().strip()
        assert stat.S_IMODE(run.run_dir.stat().st_mode) == 0o700
        for name in ("redis-password", "nats-password", "redis.conf", "nats.conf", "api-key"):
            assert stat.S_IMODE((run.run_dir / name).stat().st_mode) == 0o600, name
        for pid in pids:  # on no command line that `ps` shows
            with contextlib.suppress(OSError):
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
                assert redis_password.encode() not in command and nats_password.encode() not in command

        for wrong in (None, "not-the-password"):
            with (
                redis.Redis(port=redis_port, password=wrong, socket_timeout=5) as client,
                pytest.raises(redis.AuthenticationError),
            ):
                client.ping()
        with redis.Redis(port=redis_port, password=redis_password, socket_timeout=5) as client:
            assert client.ping()

        asyncio.run(_nats_wants_the_password(nats_port, nats_password))
        assert redis_password not in run.text() and nats_password not in run.text()


def _nats_answer(port: int, credentials: dict[str, str]) -> bytes:
    """What the NATS server says to a CONNECT (with these credentials) and a PING, by the wire
    protocol itself: `PONG` once in, `-ERR 'Authorization Violation'` if refused."""
    connect = json.dumps({"verbose": False, "pedantic": False, **credentials}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        assert sock.recv(4096).startswith(b"INFO")
        sock.sendall(b"CONNECT " + connect + b"\r\nPING\r\n")
        return sock.recv(4096)


async def _nats_wants_the_password(port: int, password: str) -> None:
    url = f"nats://127.0.0.1:{port}"
    for credentials in ({}, {"user": NATS_USER, "pass": "not-the-password"}):
        assert b"Authorization Violation" in _nats_answer(port, credentials)
    assert _nats_answer(port, {"user": NATS_USER, "pass": password}).startswith(b"PONG")
    client = await nats.connect(
        url, allow_reconnect=False, connect_timeout=5, user=NATS_USER, password=password
    )
    try:
        # The service's own processes got in too: the leading listener's relay made the stream.
        js = client.jetstream()
        deadline = time.monotonic() + 60
        while True:
            try:
                await js.stream_info("ORDERS")
                break
            except Exception:
                assert time.monotonic() < deadline, "the listener never created its JetStream stream"
                await asyncio.sleep(0.5)
    finally:
        await client.close()


def test_kill_9_of_up_leaves_no_child_running(tmp_path: Path) -> None:
    with running_up(tmp_path) as run:
        children = [pid for pid in process_tree(run.process.pid) if pid != run.process.pid]
        assert len(children) >= 7, children  # redis, nats, simulator, worker, listener, gateway, dashboard
        run.process.send_signal(signal.SIGKILL)
        run.process.wait(timeout=10)
        # Generous: each child gets SIGTERM at once and stops within its 5 s grace period.
        deadline = time.monotonic() + 60
        while any(alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [pid for pid in children if alive(pid)] == []
