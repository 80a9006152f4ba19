"""The one way to start a stack's processes: servers, simulator, workers, listeners, gateways, dashboard.

`up`, the test stack (launcher/stack.py), the chaos test and the benchmarks each make a
`Launcher` and call its methods; what differs between them is given as arguments (where
the logs go, the environment, whether a supervisor restarts what dies), not written again.
Each method starts one `ManagedProcess`, waits until it serves, and returns it. The
service's processes run as `python -m order_execution.cli <role>`; nothing of theirs is imported here.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, overload

import redis

from order_execution.launcher.processes import ManagedProcess, group_pids, http_ok, port_open, python_command
from order_execution.launcher.service_env import gateway_port_env, metrics_port_env
from order_execution.launcher.supervisor import Backoff

# The module that runs the exchange simulator (`python -m SIMULATOR_MODULE`): named once, here.
SIMULATOR_MODULE = "usdm_simulator"
# The module whose roles (gateway, worker, listener, dashboard) are the service's processes.
SERVICE_MODULE = "order_execution.cli"


class Start(Protocol):
    """Starts a process and returns it; a supervisor's (`Supervisor.start`) also restarts it when
    it dies, waiting as `backoff` says (else as the supervisor's own)."""

    def __call__(self, process: ManagedProcess, *, backoff: Backoff | None = None) -> ManagedProcess: ...


def start_once(process: ManagedProcess, *, backoff: Backoff | None = None) -> ManagedProcess:
    """Start `process`, never to be restarted (`backoff` is for a supervisor: unused here)."""
    return process.start()


# An exchange account of the simulator: its API key and secret.
SimulatorAccount = tuple[str, str]


@overload
def simulator_command(port: int, key: str, secret: str, /, *args: str) -> list[str]: ...
@overload
def simulator_command(port: int, accounts: Sequence[SimulatorAccount], /, *args: str) -> list[str]: ...
def simulator_command(port: int, *given: Any) -> list[str]:
    """Run the simulator on `port` with one account (`key`, `secret`) or several (`accounts`, a list
    of (key, secret), in order); the arguments after them are more of its options.

    Raises ValueError for no account at all.
    """
    accounts, args = _split_accounts(given)
    flags = [part for key, secret in accounts for part in ("--account", f"{key}:{secret}")]
    return python_command(SIMULATOR_MODULE, "--port", str(port), *flags, *args)


def _split_accounts(given: tuple[Any, ...]) -> tuple[list[SimulatorAccount], tuple[str, ...]]:
    """`simulator_command`'s arguments after the port: the accounts, then the simulator's options."""
    if given and isinstance(given[0], str):  # the single-account form: key, secret, options...
        if len(given) < 2:
            raise ValueError("simulator_command: a key needs its secret")
        return [(given[0], given[1])], tuple(given[2:])
    if not given or not given[0]:
        raise ValueError("simulator_command: give at least one account (key, secret)")
    return [(str(key), str(secret)) for key, secret in given[0]], tuple(given[1:])


def service_command(role: str, *args: str) -> list[str]:
    """Run one of the service's processes: `role` is gateway, worker, listener or dashboard."""
    return python_command(SERVICE_MODULE, role, *args)


def redis_command(
    server: str,
    port: int,
    data_dir: Path,
    pidfile: Path | None = None,
    config_file: Path | None = None,
    *,
    host: str = "127.0.0.1",
) -> list[str]:
    """How the launcher runs a redis-server: on `host` (loopback unless a test's own network says
    otherwise), data in `data_dir`, its pid in `pidfile` if given.

    `config_file` (first, as redis-server wants it) carries what must not be on the command
    line: the password. Append-only file, fsynced every second, so an accepted order survives
    a crash of Redis or of `up`; RDB snapshots are off (the AOF is the one copy).
    """
    return [
        server,
        *([str(config_file)] if config_file is not None else []),
        "--bind",
        host,
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
        *(["--pidfile", str(pidfile)] if pidfile is not None else []),
    ]


def nats_command(
    server: str, port: int, data_dir: Path, pidfile: Path | None = None, config_file: Path | None = None
) -> list[str]:
    """How the launcher runs one nats-server with JetStream on 127.0.0.1:`port`, streams in
    `data_dir`; `config_file` carries what must not be on the command line (the login)."""
    return [
        server,
        *(["-c", str(config_file)] if config_file is not None else []),
        "-a",
        "127.0.0.1",
        "-p",
        str(port),
        "-js",
        "-sd",
        str(data_dir),
        *(["-P", str(pidfile)] if pidfile is not None else []),
    ]


class Launcher:
    """Starts a stack's processes, each logging to `<log_dir>/<name>.log`, and stops them by pid.

    `base_env` is added to every process's environment, `env` (kept, and read at each start,
    so servers started first can add their addresses to it) to the service's processes'.
    `start` starts a process: by default once (`start_once`); `up` passes its supervisor's,
    which also restarts what dies. With `die_with_parent` each process gets SIGTERM when the
    thread that starts it dies: only for a launcher driven from one long-lived thread.

    Every process started is kept in `started` (oldest first); starting a name again (a
    replacement after a kill) names the new one `name.2`, `name.3`, ...
    """

    def __init__(
        self,
        log_dir: Path,
        *,
        env: dict[str, str] | None = None,
        base_env: Mapping[str, str] | None = None,
        start: Start = start_once,
        cwd: Path | None = None,
        die_with_parent: bool = True,
    ) -> None:
        self.log_dir = log_dir
        self.env = env if env is not None else {}
        self.base_env = dict(base_env or {})
        self.started: list[ManagedProcess] = []
        self._start = start
        self._cwd = cwd
        self._die_with_parent = die_with_parent
        self._servers: set[int] = set()  # ids of the processes that serve the service (stopped last)
        self._incarnations: Counter[str] = Counter()

    def start(
        self,
        name: str,
        command: list[str],
        env: Mapping[str, str] | None = None,
        *,
        server: bool = False,
        umask: int = -1,
        backoff: Backoff | None = None,
    ) -> ManagedProcess:
        """Start `command` as `name` with `base_env` and `env` added to this process's environment.

        A `server` (one the service's processes use) is stopped after them. `umask` is the
        process's (-1: inherited); `backoff` the restart delays a supervising `start` uses.
        """
        self._incarnations[name] += 1
        count = self._incarnations[name]
        process = ManagedProcess(
            name if count == 1 else f"{name}.{count}",
            command,
            {**self.base_env, **(env or {})},
            log_dir=self.log_dir,
            cwd=self._cwd,
            die_with_parent=self._die_with_parent,
            umask=umask,
        )
        self.started.append(process)  # before it starts: an interrupt right after the fork still stops it
        if server:
            self._servers.add(id(process))
        return self._start(process, backoff=backoff)

    # ------------------------------------------------------------------ servers
    def redis(
        self,
        server: str,
        port: int,
        data_dir: Path,
        *,
        password: str | None = None,
        config_file: Path | None = None,
        pidfile: Path | None = None,
        name: str = "redis",
        timeout_s: float = 30.0,
    ) -> ManagedProcess:
        """Start a redis-server on 127.0.0.1:`port` (`redis_command`); return once it answers PING
        (with `password`, which `config_file` must set), its append-only file loaded.

        Raises RuntimeError, with its log tail, if it exits or does not answer within `timeout_s`.
        """
        process = self.start(name, redis_command(server, port, data_dir, pidfile, config_file), server=True)

        def pong() -> bool:
            client = redis.Redis(port=port, password=password, socket_timeout=1.0, socket_connect_timeout=1.0)
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False
            finally:
                client.close()

        process.wait_until("answering PING", pong, timeout_s)
        return process

    def nats(
        self,
        server: str,
        port: int,
        data_dir: Path,
        *,
        config_file: Path | None = None,
        pidfile: Path | None = None,
        name: str = "nats",
        timeout_s: float = 30.0,
    ) -> ManagedProcess:
        """Start a nats-server with JetStream on 127.0.0.1:`port` (`nats_command`); return once it
        accepts connections. Raises RuntimeError, with its log tail, if it exits or times out."""
        process = self.start(name, nats_command(server, port, data_dir, pidfile, config_file), server=True)
        process.wait_until("accepting connections", lambda: port_open("127.0.0.1", port), timeout_s)
        return process

    @overload
    def simulator(self, port: int, key: str, secret: str, /, *args: str) -> ManagedProcess: ...
    @overload
    def simulator(self, port: int, accounts: Sequence[SimulatorAccount], /, *args: str) -> ManagedProcess: ...
    def simulator(self, port: int, *given: Any) -> ManagedProcess:
        """Start the simulator on 127.0.0.1:`port` with one account (`key`, `secret`) or several
        (`accounts`, a list of (key, secret)) and the options after them (`simulator_command`);
        return once it answers. Raises RuntimeError (log tail) if it exits or times out."""
        process = self.start("simulator", simulator_command(port, *given), server=True)
        process.wait_until("listening", lambda: http_ok(f"http://127.0.0.1:{port}/fapi/v1/time"))
        return process

    # ------------------------------------------------------------------ the service
    def worker(
        self, name: str, *, metrics_port: int | None = None, max_in_flight: int | None = None
    ) -> ManagedProcess:
        """Start one worker process (Dramatiq with one process of its own), its /metrics on
        `metrics_port` if given (else the settings'), `max_in_flight` overriding the settings'."""
        args = ("--max-in-flight", str(max_in_flight)) if max_in_flight is not None else ()
        env = metrics_port_env("WORKER", metrics_port)
        return self.start(name, service_command("worker", "--processes", "1", *args), {**self.env, **env})

    def listener(self, name: str, *, metrics_port: int | None = None) -> ManagedProcess:
        """Start one listener, its /metrics on `metrics_port` if given (else the settings')."""
        env = metrics_port_env("LISTENER", metrics_port)
        return self.start(name, service_command("listener"), {**self.env, **env})

    def gateway(
        self, name: str, ready_url: str, *, ports: tuple[int, int] | None = None, timeout_s: float = 60.0
    ) -> ManagedProcess:
        """Start a gateway, on the (gRPC, HTTP) `ports` if given (else the settings'), and return once
        `ready_url` (its /health/ready) answers 200. Raises RuntimeError (log tail) otherwise."""
        env = gateway_port_env(*ports) if ports is not None else {}
        process = self.start(name, service_command("gateway"), {**self.env, **env})
        process.wait_until("ready", lambda: http_ok(ready_url), timeout_s)
        return process

    def dashboard(self, port: int) -> ManagedProcess:
        """Start the Dramatiq dashboard on 127.0.0.1:`port`; return once its /health answers."""
        env = {**self.env, "ORDER_EXECUTION__DASHBOARD__PORT": str(port)}
        process = self.start("dashboard", service_command("dashboard"), env)
        process.wait_until("serving", lambda: http_ok(f"http://127.0.0.1:{port}/health"))
        return process

    # ------------------------------------------------------------------ stopping
    def stop(self, *, timeout_s: float = 10.0, services_at_once: bool = False) -> None:
        """Stop every process started, by pid: the service's in reverse start order (all at once
        if `services_at_once`), then the servers (simulator, Redis, NATS) in reverse start order."""
        services = [p for p in reversed(self.started) if id(p) not in self._servers]
        servers = [p for p in reversed(self.started) if id(p) in self._servers]
        if services_at_once and services:
            with ThreadPoolExecutor(max_workers=len(services)) as pool:
                list(pool.map(lambda process: process.stop(timeout_s), services))
        else:
            for process in services:
                process.stop(timeout_s)
        for process in servers:
            process.stop(timeout_s)

    def leftovers(self, wait_s: float = 3.0) -> list[int]:
        """Pids still alive in any process group this launcher started (none after `stop`), waiting
        up to `wait_s` for SIGKILLed ones to go."""
        deadline = time.monotonic() + wait_s
        while True:
            groups = [process.pid for process in self.started if process.process is not None]
            alive = sorted(pid for group in groups for pid in group_pids(group))
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.1)
