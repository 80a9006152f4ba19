"""`order-execution up`: the whole service on one machine, with nothing but Python.

Uses Redis and NATS where the settings point if they answer; otherwise starts its own,
password-protected (launcher/embedded_servers.py). Starts the exchange simulator unless told
not to, then the workers (one process per core unless `worker.processes` or `--workers`
says otherwise), the user-data-stream listener(s), the gateway and the Dramatiq dashboard,
and prints where everything is. A child that exits is restarted with growing delays (launcher/supervisor.py);
only Ctrl-C, SIGTERM or SIGHUP stops everything, in reverse start order; a kill -9 of `up`
takes its children with it (each gets SIGTERM when `up` dies, see `ManagedProcess.die_with_parent`).

Everything listens on 127.0.0.1 unless `--listen ADDRESS` says otherwise, which exposes
the gateway's gRPC and HTTP ports and the worker and listener /metrics (they follow
`server.host`) and requires authentication; the dashboard, the simulator, Redis and NATS
stay on 127.0.0.1 whatever `--listen` says (the first two have no keys at all). `.run/`,
with the logs, the servers' data and every secret, is its owner's alone (launcher/run_dir.py).
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from order_execution.cli.credentials import LOCAL_KEY_FILE, ensure_local_key
from order_execution.launcher import load_test
from order_execution.launcher.embedded_servers import ensure_nats, ensure_redis
from order_execution.launcher.exchange_accounts import (
    MAX_ACCOUNTS,
    GeneratedAccount,
    generate_accounts,
    service_accounts_env,
)
from order_execution.launcher.ha_servers import start_ha_servers
from order_execution.launcher.launch import Launcher
from order_execution.launcher.processes import free_port, port_open, worker_processes
from order_execution.launcher.run_dir import private_dir
from order_execution.launcher.service_env import local_client_json
from order_execution.launcher.supervisor import Supervisor
from order_execution.runtime.addresses import is_loopback_host
from order_execution.runtime.settings import Settings

RUN_DIR = Path(".run")  # logs, and the embedded servers' data, relative to where `up` runs
ACCOUNTS_DIR = RUN_DIR / "accounts"  # the simulator accounts' keys, one file each (`--accounts N`, N > 1)


def run_up(
    settings: Settings,
    *,
    with_simulator: bool = True,
    listeners: int = 1,
    workers: int = 0,
    rate_limits: bool = True,
    listen: str = "127.0.0.1",
    ha: bool = False,
    accounts: int = 1,
) -> int:
    """Start everything, supervise it until a stop signal, then stop it all; the exit code.

    `ha`: Redis under Sentinel and a NATS cluster of its own on loopback (launcher/ha_servers.py),
    never the Redis and NATS the settings name, at least two listeners and two gateways.

    `workers` worker processes (0: one per CPU core); `rate_limits=False` is load-test
    mode (launcher/load_test.py), refused with an exchange other than the simulator. `listen`
    is the address the gateway and the /metrics endpoints bind: anything but loopback is
    refused (exit code 2) while `auth.enabled` is false.

    `accounts` (1 to MAX_ACCOUNTS) simulator accounts, named `default`, `acct-2`, ...
    (launcher/exchange_accounts.py): one is today's stack; several reach the service as key
    files under .run/accounts/. More than one needs the simulator and settings that list no
    `accounts:` of their own (exit code 2 otherwise).
    """
    if not is_loopback_host(listen) and not settings.auth.enabled:
        print(
            f"order-execution up: --listen {listen or '(every address)'} would let anyone who reaches "
            "this machine trade, and auth.enabled is false. Turn authentication on (auth.enabled: true; "
            "`up` then makes a key in .run/api-key) or listen on 127.0.0.1 (the default)",
            file=sys.stderr,
        )
        return 2
    if listeners < 0 or workers < 0:
        print("order-execution up: --listeners and --workers must be 0 or more", file=sys.stderr)
        return 2
    refused = _accounts_refused(settings, accounts, with_simulator)
    if refused:
        print(f"order-execution up: {refused}", file=sys.stderr)
        return 2
    if not rate_limits and not with_simulator:
        print(
            "order-execution up: --no-rate-limits is for load tests against the bundled simulator; "
            "it cannot be combined with --no-simulator",
            file=sys.stderr,
        )
        return 2
    workers = worker_processes(workers)
    listeners = max(listeners, 2) if ha else listeners  # one leads, one stands by
    supervisor = Supervisor()
    env: dict[str, str] = {} if rate_limits else dict(load_test.SERVICE_ENV)
    # Started and restarted from this (the main) thread, which lives as long as `up` does.
    launcher = Launcher(RUN_DIR, env=env, start=supervisor.start, die_with_parent=True)
    # Whatever the settings say: `up` binds loopback unless --listen; the dashboard always.
    env.update(ORDER_EXECUTION__SERVER__HOST=listen, ORDER_EXECUTION__DASHBOARD__HOST="127.0.0.1")
    here = _url_host(listen)  # how this machine reaches what it started
    rows: list[tuple[str, str]] = []
    # SIGTERM and SIGHUP (terminal closed) must stop the children too, not kill `up` alone
    # and leave them running: during start-up they act like Ctrl-C.
    stop_signals = _stop_signals()
    previous = {signum: signal.signal(signum, _interrupt) for signum in stop_signals}
    try:
        private_dir(RUN_DIR)
        if ha:
            print(
                "starting Redis (a primary, 2 replicas, 3 sentinels) and a 3-node NATS cluster...", flush=True
            )
            servers = start_ha_servers(RUN_DIR, launcher)
            env.update(servers.env())
            rows += servers.summary()
        else:
            for name, ensure in (("Redis", ensure_redis), ("NATS", ensure_nats)):
                server_env, row = ensure(settings, launcher, RUN_DIR)
                env.update(server_env)
                rows.append((name, row))
        rows.append(("API key", _api_key_setup(settings, env)))

        if with_simulator:
            sim_port = 8090 if not port_open("127.0.0.1", 8090) else free_port()
            made = generate_accounts(accounts)
            load_test_args = () if rate_limits else load_test.SIMULATOR_ARGS
            launcher.simulator(
                sim_port,
                [account.credentials for account in made],
                "--symbols",
                ",".join(settings.symbols),
                *load_test_args,
            )
            base = f"http://127.0.0.1:{sim_port}"
            env.update(BINANCE_BASE_URL=base, **service_accounts_env(ACCOUNTS_DIR, made))
            rows.append(("Simulator", f"{base}  (admin: {base}/admin/orders; log .run/simulator.log)"))
            rows.append(("Accounts", _accounts_row(made)))
        else:
            rows.append(("Exchange", settings.exchange.rest_url))
            rows.append(("Accounts", ", ".join(settings.account_names)))

        gateway_ports = _gateway_ports(settings, 2 if ha else 1)
        print(
            f"starting {workers} worker(s), {listeners} listener(s), {len(gateway_ports)} gateway(s)...",
            flush=True,
        )
        monitoring = settings.monitoring
        worker_ports = metrics_ports(monitoring.worker_metrics_port, workers)
        listener_ports = metrics_ports(monitoring.listener_metrics_port, listeners, avoid=worker_ports)
        for index, port in enumerate(worker_ports):
            launcher.worker("worker" if index == 0 else f"worker-{index + 1}", metrics_port=port)
        for index, port in enumerate(listener_ports):
            launcher.listener("listener" if index == 0 else f"listener-{index + 1}", metrics_port=port)
        for index, (grpc_port, http_port) in enumerate(gateway_ports):
            launcher.gateway(
                "gateway" if index == 0 else f"gateway-{index + 1}",
                f"http://{here}:{http_port}/health/ready",
                ports=None if index == 0 else (grpc_port, http_port),  # the first: the settings' own
            )
        dashboard = _start_dashboard(launcher, settings)
        names = ", ".join(process.name for process in supervisor.processes)
        rows += [
            ("gRPC", f"{here}:{settings.server.grpc_port}  (order.OrderService, health, reflection)"),
            ("HTTP", f"http://{here}:{settings.server.http_port}/health  /health/ready  /metrics"),
            *(
                (
                    f"Gateway {index + 1}",
                    f"gRPC {here}:{grpc_port}  HTTP http://{here}:{http_port}/health  "
                    "(a client that gets UNAVAILABLE retries here with the same client id)",
                )
                for index, (grpc_port, http_port) in enumerate(gateway_ports)
                if index > 0
            ),
            ("Metrics", _metrics_row(here, worker_ports, listener_ports)),
            ("Listening", _exposure_row(listen)),
            ("Dashboard", f"{dashboard}  (Dramatiq queues: ready, delayed, dead letters)"),
            ("Processes", f"{names}  (each restarted if it exits)"),
            ("Logs", str(RUN_DIR.resolve())),
        ]
        if not rate_limits:
            print(f"\n{load_test.BANNER}")
        print(
            "\norder-execution is up, highly available on this machine's loopback "
            "(Redis under Sentinel, a NATS cluster, two gateways):"
            if ha
            else "\norder-execution is up:"
        )
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


def _accounts_refused(settings: Settings, accounts: int, with_simulator: bool) -> str:
    """Why `up` cannot run `accounts` simulator accounts with these settings; empty if it can."""
    if not 1 <= accounts <= MAX_ACCOUNTS:
        return f"--accounts must be between 1 and {MAX_ACCOUNTS}, got {accounts}"
    if accounts == 1:
        return ""
    if not with_simulator:
        return (
            "--accounts makes accounts on the bundled simulator; with --no-simulator list your exchange "
            "accounts in the settings (accounts:) instead"
        )
    if settings.accounts:
        names = ", ".join(settings.account_names)
        return (
            f"--accounts {accounts} would replace the accounts in the settings ({names}); "
            "remove `accounts:` from them or leave out --accounts"
        )
    return ""


def _accounts_row(made: list[GeneratedAccount]) -> str:
    """The summary line about the simulator accounts the service trades."""
    names = ", ".join(account.name for account in made)
    if len(made) == 1:
        return f"{names}  (`up --accounts N` trades N simulator accounts)"
    return (
        f"{names}  (keys in {ACCOUNTS_DIR.resolve()}/, owner-only;\n"
        f"             an order that names no account goes to {made[0].name})"
    )


def _gateway_ports(settings: Settings, count: int) -> list[tuple[int, int]]:
    """(gRPC, HTTP) ports for `count` gateways: the settings' for the first; for each other the
    next ones up if both are free, else two free ports."""
    first = (settings.server.grpc_port, settings.server.http_port)
    ports = [first]
    for index in range(1, count):
        grpc_port, http_port = first[0] + index, first[1] + index
        if port_open("127.0.0.1", grpc_port) or port_open("127.0.0.1", http_port):
            grpc_port, http_port = free_port(), free_port()
        ports.append((grpc_port, http_port))
    return ports


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


def _url_host(listen: str) -> str:
    """The host to put in a URL that reaches something bound to `listen` from this machine."""
    if listen in ("", "0.0.0.0", "::", "[::]"):
        return "127.0.0.1"
    return f"[{listen}]" if ":" in listen and not listen.startswith("[") else listen


def _exposure_row(listen: str) -> str:
    """What `up` exposes beyond this machine, in one line."""
    if is_loopback_host(listen):
        return "127.0.0.1 only (`up --listen 0.0.0.0` exposes gRPC, HTTP and /metrics; needs auth)"
    return (
        f"gRPC, HTTP and /metrics on {listen or 'every address'} (API keys required); dashboard, "
        "simulator, Redis and NATS on 127.0.0.1 only"
    )


def _metrics_row(here: str, worker_ports: list[int], listener_ports: list[int]) -> str:
    """Where each worker's and listener's own /metrics is (the gateway's is on its HTTP port)."""
    listed = [
        f"{kind} http://{here}:{port}/metrics"
        for kind, ports in (("worker", worker_ports), ("listener", listener_ports))
        for port in ports
        if port
    ]
    return "  ".join(listed) or "off (monitoring.*_metrics_port: 0)"


def _start_dashboard(launcher: Launcher, settings: Settings) -> str:
    """Start `order-execution dashboard` on 127.0.0.1 (on a free port if the configured one is
    taken); its URL."""
    port = settings.dashboard.port
    if port_open("127.0.0.1", port):
        port = free_port()
    launcher.dashboard(port)
    return f"http://127.0.0.1:{port}{settings.dashboard.path}/"


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
