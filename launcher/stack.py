"""The test and bench stack: simulator, workers, listeners and gateway as separate processes against
given Redis and NATS, started through the one `Launcher`.

Used by the integration tests and the benchmarks, so both run the service exactly as
production does: each process its own command, talking over real sockets.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from order_execution.launcher import load_test
from order_execution.launcher.exchange_accounts import (
    GeneratedAccount,
    generate_accounts,
    service_accounts_env,
)
from order_execution.launcher.launch import Launcher
from order_execution.launcher.processes import ManagedProcess, free_port
from order_execution.launcher.service_env import gateway_port_env, isolated_env, local_client_json
from order_execution.runtime.addresses import redis_url


@dataclass
class LocalStack:
    grpc_target: str
    http_base: str
    exchange_base: str
    nats_url: str
    processes: dict[str, ManagedProcess]
    api_key: str = ""  # the simulator account the service trades on (with several: the first, `default`)
    secret_key: str = ""
    metrics_urls: dict[str, str] = field(default_factory=dict)  # worker/listener name -> its /metrics
    log_dir: Path | None = None
    grpc_api_key: str = ""  # with auth=True: the key gRPC calls send as metadata x-api-key
    accounts: tuple[GeneratedAccount, ...] = ()  # every simulator account the service trades, in order

    def health(self) -> dict[str, Any]:
        """The gateway's /health JSON, whatever its status code (503 still has a body)."""
        try:
            with urllib.request.urlopen(f"{self.http_base}/health", timeout=2) as response:
                return dict(json.loads(response.read()))
        except urllib.error.HTTPError as exc:
            return dict(json.loads(exc.read()))

    def admin(self, path: str, body: dict[str, object] | None = None) -> object:
        """Call the simulator's admin API (GET, or POST with a JSON body)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.exchange_base}{path}",
            data=data,
            method="POST" if data else "GET",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())


@contextmanager
def local_stack(
    redis_address: str,
    nats_url: str,
    *,
    redis_db: int,
    log_dir: Path,
    simulator_args: tuple[str, ...] = (),
    workers: int = 1,
    listeners: int = 1,
    extra_env: dict[str, str] | None = None,
    symbols: list[str] | None = None,
    rate_limits: bool = True,
    auth: bool = False,
    accounts: int = 1,
) -> Iterator[LocalStack]:
    """Run the simulator, `workers` workers, `listeners` listeners and the gateway.

    Flushes `redis_db` first and stops every process by pid on exit. `extra_env` is added to
    the service processes' environment (e.g. `ORDER_EXECUTION__WORKER__...` overrides).
    `symbols` (default: the settings' default) are listed by the simulator and traded by the
    service; `rate_limits=False` is load-test mode (launcher/load_test.py). In
    `processes` a single worker is "worker" and a single listener "listener"; several are
    "worker-1", "worker-2", ... and "listener-1", ...

    `auth=True` runs the gateway as production does, requiring an API key: one client
    "local" with a fresh key (`LocalStack.grpc_api_key`); by default auth is off, so
    tests call it with no key.

    `accounts` simulator accounts (launcher/exchange_accounts.py, as `up --accounts`): one is
    given to the service in the environment; several, named `default`, `acct-2`, ..., by key
    files under `log_dir/accounts`.
    """
    redis.Redis.from_url(redis_url(redis_address, db=redis_db)).flushdb()
    log_dir.mkdir(parents=True, exist_ok=True)
    made = generate_accounts(accounts)
    key, secret = made[0].credentials
    grpc_api_key = secrets.token_urlsafe(32) if auth else ""
    sim_port, grpc_port, http_port = free_port(), free_port(), free_port()
    exchange = f"http://127.0.0.1:{sim_port}"
    env = {
        "REDIS_ADDRESS": redis_address,
        "ORDER_EXECUTION__REDIS__DB": str(redis_db),
        "NATS_ADDRESS": nats_url,
        "BINANCE_BASE_URL": exchange,
        **service_accounts_env(log_dir / "accounts", made),
        "ORDER_EXECUTION__SERVER__HOST": "127.0.0.1",
        **gateway_port_env(grpc_port, http_port),
        "LOG_FORMAT": "text",
        "ORDER_EXECUTION__AUTH__ENABLED": "true" if auth else "false",
        **({"ORDER_EXECUTION__AUTH__CLIENTS": local_client_json(grpc_api_key)} if auth else {}),
        **({} if rate_limits else load_test.SERVICE_ENV),
        **({"ORDER_EXECUTION__SYMBOLS": json.dumps(symbols)} if symbols else {}),
        **(extra_env or {}),
    }
    sim_extra = (
        *(() if rate_limits else load_test.SIMULATOR_ARGS),
        *(("--symbols", ",".join(symbols)) if symbols else ()),
    )
    # die_with_parent: a test run killed outright (kill -9, a CI timeout) leaves nothing running.
    launcher = Launcher(log_dir, env=env, base_env=isolated_env(), cwd=log_dir, die_with_parent=True)
    try:
        launcher.simulator(sim_port, [account.credentials for account in made], *sim_extra, *simulator_args)
        metrics_urls: dict[str, str] = {}
        for kind, count in (("worker", workers), ("listener", listeners)):
            for name in _names(kind, count):
                port = free_port()
                metrics_urls[name] = f"http://127.0.0.1:{port}/metrics"
                if kind == "worker":
                    launcher.worker(name, metrics_port=port)
                else:
                    launcher.listener(name, metrics_port=port)
        http_base = f"http://127.0.0.1:{http_port}"
        launcher.gateway("gateway", f"{http_base}/health/ready")
        yield LocalStack(
            f"127.0.0.1:{grpc_port}",
            http_base,
            exchange,
            nats_url,
            {process.name: process for process in launcher.started},
            key,
            secret,
            metrics_urls=metrics_urls,
            log_dir=log_dir,
            grpc_api_key=grpc_api_key,
            accounts=tuple(made),
        )
    finally:
        launcher.stop()


def _names(kind: str, count: int) -> list[str]:
    """`kind` alone for one process (the key tests look up), else `kind-1` ... `kind-N`."""
    return [kind] if count == 1 else [f"{kind}-{index}" for index in range(1, count + 1)]
