"""Starts the service as separate processes on the real Redis and NATS.

The simulator, one worker process and the gateway each run as their own command, as in
production. Every process is stopped by pid (process group) when the module finishes.
"""

from __future__ import annotations

import json
import secrets
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from cli.processes import ManagedProcess, free_port, http_ok, python_command

REPO = Path(__file__).resolve().parents[2]
TEST_REDIS_DB = 13  # the service's keys and Dramatiq's queues for these tests live here


@dataclass
class RunningService:
    grpc_target: str
    http_base: str
    exchange_base: str
    nats_url: str
    processes: dict[str, ManagedProcess]

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


@pytest.fixture(scope="module")
def service(
    real_redis: str, real_nats: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    redis.Redis.from_url(f"redis://{real_redis}/{TEST_REDIS_DB}").flushdb()
    logs = Path(tmp_path_factory.mktemp("service-logs"))
    key, secret = secrets.token_hex(32), secrets.token_hex(32)
    sim_port, grpc_port, http_port = free_port(), free_port(), free_port()
    exchange = f"http://127.0.0.1:{sim_port}"
    env = {
        "REDIS_ADDRESS": real_redis,
        "ORDER_EXECUTION__REDIS__DB": str(TEST_REDIS_DB),
        "NATS_ADDRESS": real_nats,
        "BINANCE_BASE_URL": exchange,
        "BINANCE_API_KEY": key,
        "BINANCE_SECRET_KEY": secret,
        "ORDER_EXECUTION__SERVER__HOST": "127.0.0.1",
        "ORDER_EXECUTION__SERVER__GRPC_PORT": str(grpc_port),
        "ORDER_EXECUTION__SERVER__HTTP_PORT": str(http_port),
        "LOG_FORMAT": "text",
        "ORDER_EXECUTION_CONFIG": "",
        "PYTHONPATH": str(REPO),
    }
    processes: dict[str, ManagedProcess] = {}
    try:
        processes["simulator"] = ManagedProcess(
            "simulator",
            python_command(
                "simulator",
                "--port",
                str(sim_port),
                "--account",
                f"{key}:{secret}",
                "--walk-interval-ms",
                "0",
                "--price",
                "BTCUSDT=50000",
                "--price",
                "ETHUSDT=3000",
            ),
            {"PYTHONPATH": str(REPO)},
            log_dir=logs,
            cwd=logs,
        ).start()
        processes["simulator"].wait_until("listening", lambda: http_ok(f"{exchange}/fapi/v1/time"))
        processes["worker"] = ManagedProcess(
            "worker",
            python_command("cli", "worker", "--processes", "1", "--threads", "4"),
            env,
            log_dir=logs,
            cwd=logs,
        ).start()
        processes["gateway"] = ManagedProcess(
            "gateway", python_command("cli", "gateway"), env, log_dir=logs, cwd=logs
        ).start()
        http_base = f"http://127.0.0.1:{http_port}"
        processes["gateway"].wait_until("ready", lambda: http_ok(f"{http_base}/health/ready"), timeout_s=60)
        yield RunningService(f"127.0.0.1:{grpc_port}", http_base, exchange, real_nats, processes)
    finally:
        for process in reversed(list(processes.values())):
            process.stop()
