"""The multi-host test's machines: what runs on each host, started, probed, powered off, stopped.

    a: Redis primary, a sentinel, a NATS node, a gateway, the leading listener
    b: a Redis replica, a sentinel, a NATS node, a gateway, a worker
    c: a Redis replica, a sentinel, a NATS node, a worker, the standby listener
    x: the exchange simulator
    clients: the test's clients (tests/cluster/client.py)

Each host is a network namespace of a `TestNetwork`; each server listens on its host's
address at its usual port. The servers' configs come from the same functions as `up --ha`'s
(launcher/ha_server_configs.py), with passwords made for the run. Every process is a
`ManagedProcess` (its own process group, started through `ip netns exec`, which execs it, so
its pid is its own) and is stopped by pid in `stop_all`. The test's own probes (Redis,
sentinels, HTTP) run on a thread inside the clients' host, which reaches every other.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import signal
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

import httpx
import redis
import yaml
from redis.sentinel import Sentinel

from order_execution.launcher.embedded_servers import NATS_USER
from order_execution.launcher.ha_server_configs import (
    MASTER_NAME,
    nats_node_config,
    redis_node_config,
    sentinel_config,
)
from order_execution.launcher.ha_servers import jetstream_answers, replicas_online, sentinel_sees_all
from order_execution.launcher.launch import redis_command, service_command, simulator_command
from order_execution.launcher.processes import ManagedProcess, group_pids, python_command
from order_execution.launcher.service_env import REPO
from tests.cluster.netns import HostThreads, TestNetwork

HOSTS = ("a", "b", "c", "x", "clients")
DATA_HOSTS = ("a", "b", "c")  # a Redis node, a sentinel and a NATS node on each
REDIS_PORT, SENTINEL_PORT, NATS_PORT, NATS_CLUSTER_PORT = 6379, 26379, 4222, 6222
GRPC_PORT, HTTP_PORT, SIMULATOR_PORT = 50051, 9091, 8090
NAMESPACE = "oe"
T = TypeVar("T")
READY_TIMEOUT_S = 90.0  # every server and process of five hosts starting on a 2-core machine


@dataclass
class Machines:
    """The hosts' processes; see the module docstring."""

    network: TestNetwork
    root: Path
    redis_bin: str
    nats_bin: str
    symbols: list[str]
    simulator_config: Mapping[str, object]
    service_settings: Mapping[str, str]  # ORDER_EXECUTION__... for gateways, workers and listeners
    started: list[ManagedProcess] = field(default_factory=list)
    on_host: dict[str, list[ManagedProcess]] = field(default_factory=dict)
    powered_off: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.logs = self.root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.redis_password, self.sentinel_password = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        self.nats_password, self.route_password = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        self.exchange_key, self.exchange_secret = secrets.token_hex(32), secrets.token_hex(32)
        self.client_key = secrets.token_urlsafe(24)  # the clients' gRPC API key
        self.threads = HostThreads(self.network)

    # ------------------------------------------------------------------ addresses
    def address(self, host: str) -> str:
        return self.network.addresses[host]

    @property
    def gateways(self) -> list[str]:
        return [f"{self.address(host)}:{GRPC_PORT}" for host in ("a", "b")]

    @property
    def exchange_base(self) -> str:
        return f"http://{self.address('x')}:{SIMULATOR_PORT}"

    @property
    def nats_urls(self) -> list[str]:
        return [f"nats://{self.address(host)}:{NATS_PORT}" for host in DATA_HOSTS]

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        return [(self.address(host), SENTINEL_PORT) for host in DATA_HOSTS]

    def service_env(self, host: str) -> dict[str, str]:
        """The settings of a gateway, worker or listener on `host`."""
        clients = [
            {"name": "cluster-clients", "key_sha256": hashlib.sha256(self.client_key.encode()).hexdigest()}
        ]
        return {
            "PYTHONPATH": str(REPO),
            "ORDER_EXECUTION_CONFIG": "",
            "LOG_FORMAT": "text",
            "REDIS_ADDRESS": f"{self.address('a')}:{REDIS_PORT}",  # unused: the sentinels name the primary
            "REDIS_PASSWORD": self.redis_password,
            "ORDER_EXECUTION__REDIS__SENTINELS": json.dumps([f"{h}:{p}" for h, p in self.sentinels]),
            "ORDER_EXECUTION__REDIS__MASTER_NAME": MASTER_NAME,
            "ORDER_EXECUTION__REDIS__SENTINEL_PASSWORD": self.sentinel_password,
            "ORDER_EXECUTION__REDIS__MIN_REPLICA_ACKS": "1",
            "ORDER_EXECUTION__REDIS__NAMESPACE": NAMESPACE,
            "NATS_ADDRESS": ",".join(self.nats_urls),
            "ORDER_EXECUTION__NATS__SERVERS": json.dumps(self.nats_urls),
            "ORDER_EXECUTION__NATS__USER": NATS_USER,
            "ORDER_EXECUTION__NATS__PASSWORD": self.nats_password,
            "ORDER_EXECUTION__NATS__REPLICAS": "3",
            "BINANCE_BASE_URL": self.exchange_base,
            "BINANCE_API_KEY": self.exchange_key,
            "BINANCE_SECRET_KEY": self.exchange_secret,
            "ORDER_EXECUTION__EXCHANGE__PLAIN_HTTP_HOSTS": json.dumps([self.address("x")]),
            "ORDER_EXECUTION__SERVER__HOST": self.address(host),
            "ORDER_EXECUTION__SERVER__GRPC_PORT": str(GRPC_PORT),
            "ORDER_EXECUTION__SERVER__HTTP_PORT": str(HTTP_PORT),
            "ORDER_EXECUTION__AUTH__ENABLED": "true",
            "ORDER_EXECUTION__AUTH__CLIENTS": json.dumps(clients),
            "ORDER_EXECUTION__SYMBOLS": json.dumps(self.symbols),
            "ORDER_EXECUTION__RISK__ALLOWED_SYMBOLS": json.dumps(self.symbols),
            **self.service_settings,
        }

    # ------------------------------------------------------------------ probes (from the clients' host)
    def probe(self, check: Callable[[], T], timeout_s: float = 30.0) -> T:
        return self.threads.run("clients", check, timeout_s)

    def _redis(self, host: str, port: int = REDIS_PORT, password: str | None = None) -> redis.Redis:
        return redis.Redis(
            host=self.address(host),
            port=port,
            password=self.redis_password if password is None else password,
            socket_timeout=1,
            socket_connect_timeout=1,
            decode_responses=True,
        )

    def primary(self) -> redis.Redis:
        """A client of whichever node the sentinels name primary now."""
        sentinel = Sentinel(
            self.sentinels,
            sentinel_kwargs={
                "password": self.sentinel_password,
                "socket_timeout": 1,
                "socket_connect_timeout": 1,
            },
            password=self.redis_password,
            socket_timeout=1,
            socket_connect_timeout=1,
            decode_responses=True,
        )
        primary: redis.Redis = sentinel.master_for(MASTER_NAME)
        return primary

    def primary_host(self) -> str:
        """The host whose Redis the sentinels name primary now."""

        def ask() -> str:
            for host in DATA_HOSTS:
                if host in self.powered_off:
                    continue
                with contextlib.suppress(redis.RedisError):
                    with self._redis(host, SENTINEL_PORT, self.sentinel_password) as sentinel:
                        address = sentinel.sentinel_get_master_addr_by_name(MASTER_NAME)
                    if address:
                        return next(h for h in DATA_HOSTS if self.address(h) == address[0])
            raise RuntimeError("no sentinel names a primary")

        return self.probe(ask)

    def lease_holder(self) -> str:
        """The listener id that holds the user-stream lease ('' if none)."""
        return self.probe(self._lease)

    def _lease(self) -> str:
        with contextlib.suppress(redis.RedisError):
            return str(self.primary().get(f"{NAMESPACE}:listener:lease") or "")
        return ""

    # ------------------------------------------------------------------ starting
    def _start(
        self, host: str, role: str, command: list[str], env: Mapping[str, str] | None = None
    ) -> ManagedProcess:
        process = ManagedProcess(
            f"{host}-{role}",
            self.network.command(host, command),
            dict(env or {}),
            log_dir=self.logs,
            cwd=self.logs,
            die_with_parent=True,  # SIGTERM if the test is killed before it can stop them (main thread)
        )
        self.started.append(process)  # before it starts: a failure after the fork still stops it
        self.on_host.setdefault(host, []).append(process.start())
        return process

    def _data_dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    def start_servers(self) -> None:
        """Redis (a primary), the sentinels and the NATS nodes; return once all are healthy."""
        primary = self.address("a")
        for host in DATA_HOSTS:
            data = self._data_dir(f"redis-{host}")
            config = data / "redis.conf"
            config.write_text(
                redis_node_config(
                    self.redis_password, None if host == "a" else REDIS_PORT, primary_host=primary
                )
            )
            command = redis_command(
                self.redis_bin, REDIS_PORT, data, data / "redis.pid", config, host=self.address(host)
            )
            self._start(host, "redis", command)
        for host in DATA_HOSTS:
            data = self._data_dir(f"nats-{host}")
            routes = [f"{self.address(other)}:{NATS_CLUSTER_PORT}" for other in DATA_HOSTS if other != host]
            config = data / "nats.conf"
            config.write_text(
                nats_node_config(
                    f"nats-{host}",
                    NATS_PORT,
                    NATS_CLUSTER_PORT,
                    routes,
                    password=self.nats_password,
                    route_password=self.route_password,
                    host=self.address(host),
                )
            )
            self._start(host, "nats", [self.nats_bin, "-c", str(config), "-js", "-sd", str(data)])
        self._wait("the Redis primary serving both replicas", self._replicas_online)
        for host in DATA_HOSTS:
            data = self._data_dir(f"sentinel-{host}")
            config = data / "sentinel.conf"
            config.write_text(
                sentinel_config(
                    SENTINEL_PORT,
                    data,
                    master_name=MASTER_NAME,
                    primary_port=REDIS_PORT,
                    redis_password=self.redis_password,
                    sentinel_password=self.sentinel_password,
                    host=self.address(host),
                    primary_host=primary,
                )
            )
            self._start(host, "sentinel", [self.redis_bin, str(config), "--sentinel"])
        self._wait("every sentinel watching the primary, both replicas and the others", self._sentinels_agree)
        self._wait("every NATS node serving JetStream", self._jetstream_ready)

    def start_simulator(self) -> None:
        path = self.root / "simulator.yaml"
        path.write_text(yaml.safe_dump(dict(self.simulator_config)))
        command = simulator_command(
            SIMULATOR_PORT, self.exchange_key, self.exchange_secret,
            "--config", str(path), "--host", self.address("x"),
        )  # fmt: skip
        self._start("x", "simulator", command, {"PYTHONPATH": str(REPO)})
        self._wait("the simulator answering", lambda: self._http_ok(f"{self.exchange_base}/fapi/v1/time"))

    def start_service(self) -> None:
        """The leading listener first (on a), then gateways, workers and the standby listener."""
        self._start("a", "listener", service_command("listener"), self.service_env("a"))
        self._wait("a listener holding the lease", lambda: bool(self._lease()))
        for host in ("a", "b"):
            self._start(host, "gateway", service_command("gateway"), self.service_env(host))
        for host in ("b", "c"):
            command = service_command("worker", "--processes", "1", "--max-in-flight", "16")
            self._start(host, "worker", command, self.service_env(host))
        self._start("c", "listener", service_command("listener"), self.service_env("c"))
        for host in ("a", "b"):
            url = f"http://{self.address(host)}:{HTTP_PORT}/health/ready"
            self._wait(f"the gateway on {host} ready", partial(self._http_ok, url))

    def start_client(self, config_path: Path) -> ManagedProcess:
        command = python_command("tests.cluster.client", str(config_path))
        return self._start("clients", "client", command, {"PYTHONPATH": str(REPO)})

    def _wait(self, what: str, check: Callable[[], bool], timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            dead = [p for p in self.started if not p.alive() and p.name.split("-")[0] not in self.powered_off]
            if dead:
                raise RuntimeError(f"{dead[0].name} exited; last log lines:\n{dead[0].log_tail()}")
            if self.probe(check):
                return
            time.sleep(0.2)
        tails = "\n".join(f"--- {p.name}\n{p.log_tail(8)}" for p in self.started)
        raise RuntimeError(f"not {what} after {timeout_s:.0f} s\n{tails}")

    @staticmethod
    def _http_ok(url: str) -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def _replicas_online(self) -> bool:
        try:
            with self._redis("a") as primary:
                return replicas_online(primary, replicas=2)
        except redis.RedisError:
            return False

    def _sentinels_agree(self) -> bool:
        try:
            for host in DATA_HOSTS:
                with self._redis(host, SENTINEL_PORT, self.sentinel_password) as sentinel:
                    if not sentinel_sees_all(sentinel, MASTER_NAME, sentinels=3, replicas=2):
                        return False
        except redis.RedisError:
            return False
        return True

    def _jetstream_ready(self) -> bool:
        return all(jetstream_answers(url, self.nats_password) for url in self.nats_urls)

    # ------------------------------------------------------------------ faults
    def power_off(self, host: str) -> list[str]:
        """`host` loses power: its cable is pulled first (so no FIN or RST gets out), then every
        process on it is kill -9ed at once. Returns the names of the processes killed."""
        self.network.cut(host)
        self.powered_off.add(host)
        victims = [p for p in self.on_host.get(host, []) if p.alive()]
        for process in victims:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        for process in victims:
            process.kill()  # reaps it
        return [p.name for p in victims]

    # ------------------------------------------------------------------ cleanup
    def stop_all(self) -> list[int]:
        """Stop every process by pid (service and client first, in parallel; servers last), close the
        probe threads; return the pids of any left alive."""
        servers = ("redis", "nats", "sentinel", "simulator")
        first = [p for p in self.started if not p.name.endswith(servers)]
        last = [p for p in self.started if p.name.endswith(servers)]
        for group in (first, last):
            with ThreadPoolExecutor(max_workers=max(1, len(group))) as pool:
                list(pool.map(lambda p: p.stop(timeout_s=8), group))
        self.threads.close()
        deadline = time.monotonic() + 3
        while True:
            alive = sorted(
                pid for p in self.started if p.process is not None for pid in group_pids(p.process.pid)
            )
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.1)
