"""The CLI against a running gateway, and SIGTERM draining each process within its grace.

Runs its own stack in its own Redis db (allocated in tests/redis_dbs.py; flushed first) and stops
every process it starts by pid.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from order_execution.launcher.launch import service_command
from order_execution.launcher.processes import ManagedProcess, free_port, http_ok, python_command
from order_execution.launcher.service_env import REPO
from order_execution.launcher.stack import LocalStack, local_stack
from order_execution.orders.store import OrderStore
from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc
from order_execution.runtime.redis_connection import open_redis
from order_execution.runtime.settings import RedisSettings
from order_execution.tasks.messages import submit_order_push
from tests.factories import make_order
from tests.redis_dbs import redis_db

pytestmark = pytest.mark.integration

REDIS_DB = redis_db(__name__)


@pytest.fixture(scope="module")
def stack(real_redis: str, real_nats: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    frozen = ("--walk-interval-ms", "0", "--price", "BTCUSDT=50000", "--price", "ETHUSDT=3000")
    with local_stack(
        real_redis,
        real_nats,
        redis_db=REDIS_DB,
        log_dir=tmp_path_factory.mktemp("logs"),
        simulator_args=frozen,
        extra_env={"ORDER_EXECUTION__AUTH__ENABLED": "false"},  # API keys are tested elsewhere
    ) as running:
        yield running


def cli(*args: str) -> list[str]:
    return python_command("order_execution.cli", *args)


def cli_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "ORDER_EXECUTION_CONFIG": "", **extra}


def create(stack: LocalStack, **fields: object) -> pb.CreateOrderResponse:
    with grpc.insecure_channel(stack.grpc_target) as channel:
        request = pb.CreateOrderRequest(symbol="BTCUSDT", side=pb.BUY, quantity="0.002", **fields)  # type: ignore[arg-type]
        reply: pb.CreateOrderResponse = order_pb2_grpc.OrderServiceStub(channel).CreateOrder(
            request, timeout=10
        )
        return reply


def test_watch_piped_into_head_exits_quietly(stack: LocalStack, tmp_path: Path) -> None:
    watch = subprocess.Popen(
        cli("order", "watch", "--target", stack.grpc_target),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
        cwd=tmp_path,
    )
    head = subprocess.Popen(["head", "-1"], stdin=watch.stdout, stdout=subprocess.PIPE)
    assert watch.stdout is not None
    watch.stdout.close()
    try:
        first, _ = head.communicate(timeout=20)
        assert first.startswith(b"watching")
        create(stack, type=pb.MARKET)  # the next line meets a closed pipe
        _, errors = watch.communicate(timeout=20)
        assert watch.returncode == 0
        assert errors == b""
    finally:
        for process in (watch, head):
            if process.poll() is None:
                process.kill()
                process.wait()


def test_watch_and_get_show_every_state_fills_and_no_unspecified(stack: LocalStack, tmp_path: Path) -> None:
    port = stack.grpc_target.rsplit(":", 1)[1]
    settings_env = cli_env(ORDER_EXECUTION__SERVER__HOST="127.0.0.1", ORDER_EXECUTION__SERVER__GRPC_PORT=port)
    watch = subprocess.Popen(  # no --target: the address comes from the settings
        cli("order", "watch", "--json", "--timeout", "10", "--symbol", "BTCUSDT"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=settings_env,
        cwd=tmp_path,
    )
    try:
        time.sleep(2.5)  # the stream is open
        order_id = create(stack, type=pb.MARKET).order_id
        out, errors = watch.communicate(timeout=30)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert watch.returncode == 0, errors
    updates = [json.loads(line) for line in out.decode().splitlines()]
    states = [u["order"]["state"] for u in updates if u["order"]["order_id"] == order_id]
    assert states[:3] == ["NEW", "SUBMITTING", "SUBMITTED"] or {"NEW", "SUBMITTING", "FILLED"} <= set(states)

    shown = subprocess.run(
        cli("order", "get", order_id),
        env=settings_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert shown.returncode == 0, shown.stderr
    assert "UNSPECIFIED" not in shown.stdout
    assert "time in force  -" in shown.stdout and "FILLED" in shown.stdout
    assert "fill " in shown.stdout and "fee" in shown.stdout
    as_json = subprocess.run(
        cli("order", "--target", stack.grpc_target, "get", order_id, "--json"),
        env=cli_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    order = json.loads(as_json.stdout)
    assert order["state"] == "FILLED" and order["time_in_force"] is None and order["fills"]


def test_unreachable_gateway_says_where_and_how(tmp_path: Path) -> None:
    port = str(free_port())
    result = subprocess.run(
        cli("order", "list"),
        env=cli_env(ORDER_EXECUTION__SERVER__GRPC_PORT=port),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"127.0.0.1:{port}" in result.stderr and "--target" in result.stderr


def test_sigterm_ends_open_streams_cleanly_and_the_gateway_exits_within_grace(
    stack: LocalStack, tmp_path: Path
) -> None:
    # A long grace, so that "the stream ended at once" and "the gateway exited without needing its
    # grace" are seconds apart from what a gateway that waited for the grace would show, on a
    # loaded machine too.
    grace_s = 10.0
    grpc_port, http_port = free_port(), free_port()
    env = {
        **stack.processes["gateway"].env,
        "ORDER_EXECUTION__SERVER__GRPC_PORT": str(grpc_port),
        "ORDER_EXECUTION__SERVER__HTTP_PORT": str(http_port),
        "ORDER_EXECUTION__SERVER__SHUTDOWN_GRACE_MS": str(int(grace_s * 1000)),
    }
    gateway = ManagedProcess("gateway-2", service_command("gateway"), env, log_dir=tmp_path, cwd=tmp_path)
    create(stack, type=pb.MARKET)  # the outbox is not empty: the stream has a real resume point
    gateway.start()
    try:
        gateway.wait_until(
            "ready", lambda: http_ok(f"http://127.0.0.1:{http_port}/health/ready"), timeout_s=60
        )
        outcome: dict[str, object] = {}
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        stream = order_pb2_grpc.OrderServiceStub(channel).StreamOrderUpdates(pb.StreamOrderUpdatesRequest())

        def read() -> None:
            try:
                outcome["updates"] = list(stream)
                outcome["trailing"] = dict(stream.trailing_metadata() or ())
                outcome["code"] = stream.code()
            except grpc.RpcError as exc:
                outcome["code"] = exc.code()
            outcome["ended_at"] = time.monotonic()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        time.sleep(1.0)  # the stream is open
        signalled = time.monotonic()
        os.kill(gateway.pid, signal.SIGTERM)
        reader.join(timeout=grace_s + 10)
        assert gateway.process is not None
        gateway.process.wait(timeout=grace_s + 10)
        exited = time.monotonic() - signalled
        channel.close()
        assert outcome.get("code") == grpc.StatusCode.OK, outcome
        ended_after_s = float(outcome["ended_at"]) - signalled  # type: ignore[arg-type]
        assert ended_after_s < grace_s / 2, f"the stream waited for the grace period ({ended_after_s:.1f} s)"
        trailing = outcome["trailing"]
        assert isinstance(trailing, dict) and trailing.get("resume-token"), trailing
        assert exited < grace_s, f"gateway exited {exited:.1f} s after SIGTERM: it waited for its grace"
        assert gateway.returncode == 0, gateway.log_tail()
    finally:
        gateway.stop()


class BlackHoleExchange:
    """A TCP port that accepts connections and never answers: every exchange call hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])


def test_worker_sigterm_while_redis_is_frozen_exits_within_grace(tmp_path: Path) -> None:
    grace_s = 2.0
    redis_port = free_port()
    redis_server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(redis_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    exchange = BlackHoleExchange()
    env = {
        "PYTHONPATH": str(REPO),
        "ORDER_EXECUTION_CONFIG": "",
        "REDIS_ADDRESS": f"127.0.0.1:{redis_port}",
        "BINANCE_BASE_URL": f"http://127.0.0.1:{exchange.port}",
        "BINANCE_API_KEY": "k" * 64,
        "BINANCE_SECRET_KEY": "s" * 64,
        "LOG_FORMAT": "text",
        "ORDER_EXECUTION__SERVER__SHUTDOWN_GRACE_MS": str(int(grace_s * 1000)),
        "ORDER_EXECUTION__EXCHANGE__REQUEST_TIMEOUT_MS": "60000",
        "ORDER_EXECUTION__WORKER__MAX_ORDER_AGE_MS": "60000",
    }
    worker = ManagedProcess("worker", service_command("worker", "--processes", "1"), env, log_dir=tmp_path)
    try:
        time.sleep(0.3)
        worker.start()
        worker.wait_until("consuming", lambda: "worker consuming" in worker.log_tail(50))

        async def queue_orders() -> list[str]:
            client = open_redis(RedisSettings(address=f"127.0.0.1:{redis_port}"))
            store = OrderStore(client)
            ids = [f"o{i}" for i in range(5)]
            for order_id in ids:
                await store.create(
                    make_order(order_id=order_id, client_order_id=f"c-{order_id}"), submit_order_push
                )
            for _ in range(100):  # until the worker has claimed them (in flight)
                states = {(await store.get(i)).state.value for i in ids}
                if states == {"SUBMITTING"}:
                    break
                await asyncio.sleep(0.1)
            await client.aclose()
            return sorted(states)

        assert asyncio.run(queue_orders()) == ["SUBMITTING"], worker.log_tail()
        os.kill(redis_server.pid, signal.SIGSTOP)  # Redis unreachable: every command times out
        signalled = time.monotonic()
        os.kill(worker.pid, signal.SIGTERM)
        assert worker.process is not None
        try:
            worker.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker still running 30 s after SIGTERM:\n{worker.log_tail()}")
        exited = time.monotonic() - signalled
        # With Redis frozen the drain cannot finish: the grace deadline (2 s), or at worst the
        # last-resort exit 1 s after it, ends the worker. The 4 s more allowed here are for a loaded
        # machine; a worker that waited on Redis instead would still be running at the 30 s above.
        assert exited < grace_s + 5, f"worker exited {exited:.1f} s after SIGTERM:\n{worker.log_tail()}"
    finally:
        worker.stop()
        os.kill(redis_server.pid, signal.SIGCONT)
        redis_server.terminate()
        redis_server.wait(timeout=10)
        exchange.sock.close()


def test_a_gateway_whose_port_is_taken_exits_at_once_saying_so(real_redis: str, tmp_path: Path) -> None:
    """A failed start stops what it started: its background loops (rules, risk limits, the
    outbox tail) used to keep the process alive after grpc's bind error, so `up` never
    restarted it. It must exit non-zero, with the bind error in its log, well within the time
    the loops would otherwise run on (they tick every 0.25 s to 5 s, for ever)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            "REDIS_ADDRESS": real_redis,
            "ORDER_EXECUTION__REDIS__DB": str(REDIS_DB),
            "ORDER_EXECUTION__SERVER__GRPC_PORT": str(port),
            "ORDER_EXECUTION__SERVER__HTTP_PORT": str(free_port()),
            "ORDER_EXECUTION__AUTH__ENABLED": "false",
            "LOG_FORMAT": "text",
        }
        gateway = ManagedProcess("gateway", cli("gateway"), cli_env(**env), log_dir=tmp_path)
        try:
            gateway.start()
            assert gateway.process is not None
            # A start takes 1-3 s here; 20 s leaves room for a loaded machine, and a hang is for ever.
            code = gateway.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running 20 s after its bind failed:\n{gateway.log_tail()}") from None
        finally:
            gateway.stop()
    log = gateway.log_tail(40)
    assert code != 0, log
    assert str(port) in log, log
