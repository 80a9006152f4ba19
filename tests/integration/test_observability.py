"""Metrics, health and logs of the running stack, as an operator sees them.

Orders go through the real processes; then the gateway's /metrics and each worker's and
listener's own /metrics must show each seed metric moved as it should. /health is read
as is, with a second gateway on a dead Redis port and a third on dead NATS and exchange
ports, and with the worker stopped. Last, the log files of the whole run, and of a start
with bad settings, must hold no secret and no request signature.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from importlib import metadata
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from order_execution.launcher.launch import service_command
from order_execution.launcher.processes import ManagedProcess, free_port, http_ok
from order_execution.launcher.service_env import REPO
from order_execution.launcher.stack import LocalStack, local_stack
from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc
from tests.factories import SEED_METRICS
from tests.redis_dbs import redis_db

pytestmark = pytest.mark.integration

REDIS_DB = redis_db(__name__)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(url: str) -> Samples:
    status, text = get(url)
    assert status == 200, text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: Samples, metric: str, **labels: str) -> float:
    """Sum of `metric` over the series whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == metric and wanted <= set(ls))


@pytest.fixture(scope="module")
def stack(real_redis: str, real_nats: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with local_stack(
        real_redis,
        real_nats,
        redis_db=REDIS_DB,
        log_dir=tmp_path_factory.mktemp("observability-logs"),
        simulator_args=("--walk-interval-ms", "0", "--price", "BTCUSDT=50000", "--price", "ETHUSDT=3000"),
        extra_env={
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "debug",  # the most a process could ever log: still nothing secret
            "ORDER_EXECUTION__AUTH__ENABLED": "false",
            "ORDER_EXECUTION__ADMISSION__CLIENT_REQUESTS_PER_SECOND": "2",
            "ORDER_EXECUTION__ADMISSION__CLIENT_BURST": "20",
            "ORDER_EXECUTION__RECONCILE__INTERVAL_S": "1",
            # The cluster gauges are read on a timer and the page reused between renders: short
            # periods here, so the asserts below see what the orders just did.
            "ORDER_EXECUTION__MONITORING__CLUSTER_GAUGES_REFRESH_MS": "200",
            "ORDER_EXECUTION__MONITORING__METRICS_RENDER_MS": "0",
        },
    ) as running:
        wait_healthy(running)  # the listener's user stream and the worker's heartbeat are in
        yield running


def wait_healthy(stack: LocalStack, timeout_s: float = 30) -> dict[str, object]:
    """The gateway's /health body once it says healthy (or whatever it says at the deadline)."""
    deadline = time.monotonic() + timeout_s
    while True:
        body: dict[str, object] = json.loads(get(f"{stack.http_base}/health")[1])
        if body["status"] == "healthy" or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


@pytest.fixture
async def stub(stack: LocalStack) -> AsyncIterator[order_pb2_grpc.OrderServiceAsyncStub]:
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        yield order_pb2_grpc.OrderServiceStub(channel)


def order(symbol: str, side: int, quantity: str, price: str = "", **fields: object) -> pb.CreateOrderRequest:
    return pb.CreateOrderRequest(
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        type=pb.LIMIT if price else pb.MARKET,
        quantity=quantity,
        price=price,
        time_in_force=pb.GTC if price else pb.TIF_UNSPECIFIED,
        user_id="observer",
        **fields,  # type: ignore[arg-type]
    )


async def settle(stub: order_pb2_grpc.OrderServiceAsyncStub, order_id: str, states: set[int]) -> pb.Order:
    deadline = time.monotonic() + 15
    while True:
        current = (await stub.GetOrder(pb.GetOrderRequest(order_id=order_id))).order
        if current.state in states:
            return current
        assert time.monotonic() < deadline, f"order {order_id} stuck in {pb.OrderState.Name(current.state)}"
        await asyncio.sleep(0.05)


def scrape_all(stack: LocalStack) -> dict[str, Samples]:
    return {
        "gateway": scrape(f"{stack.http_base}/metrics"),
        **{name: scrape(url) for name, url in stack.metrics_urls.items()},
    }


def everywhere(scrapes: dict[str, Samples], metric: str, **labels: str) -> float:
    return sum(total(samples, metric, **labels) for samples in scrapes.values())


async def test_each_seed_metric_moves(stack: LocalStack, stub: order_pb2_grpc.OrderServiceAsyncStub) -> None:
    assert set(stack.metrics_urls) == {"worker", "listener"}
    before = scrape_all(stack)

    resting = await stub.CreateOrder(order("BTCUSDT", pb.BUY, "0.003", "49000"))
    market = await stub.CreateOrder(order("BTCUSDT", pb.SELL, "0.003"))
    crossing = await stub.CreateOrder(order("BTCUSDT", pb.BUY, "0.003", "50100", post_only=True))
    await settle(stub, resting.order_id, {pb.SUBMITTED})
    await stub.CancelOrder(pb.CancelOrderRequest(order_id=resting.order_id))
    await settle(stub, resting.order_id, {pb.CANCELED})
    assert (await settle(stub, market.order_id, {pb.FILLED, pb.REJECTED})).state == pb.FILLED
    assert (await settle(stub, crossing.order_id, {pb.REJECTED, pb.EXPIRED})).state == pb.REJECTED
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateOrder(order("BTCUSDT", pb.BUY, "0.003", "50000.05"))  # off the tick size
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.GetOrder(pb.GetOrderRequest(order_id="no-such-order"))
    await asyncio.sleep(0.5)  # the user stream's copies of the same news land too

    after = scrape_all(stack)
    gateway, worker, listener = after["gateway"], after["worker"], after["listener"]

    def moved(name: str, where: dict[str, Samples] | None = None, **labels: str) -> float:
        scope = where or after
        return everywhere(scope, name, **labels) - everywhere({k: before[k] for k in scope}, name, **labels)

    only_gateway = {"gateway": gateway}
    only_worker = {"worker": worker}
    assert moved("order_execution_orders_created_total", only_gateway) == 3
    assert moved("order_execution_order_latency_seconds_count", only_gateway) >= 3
    assert moved("order_execution_orders_rejected_total", stage="gateway") == 1
    assert moved("order_execution_orders_rejected_total", stage="exchange") == 1
    # Filled and canceled count in whichever process stored the change (worker or listener), once.
    assert moved("order_execution_orders_filled_total", symbol="BTCUSDT") == 1
    assert moved("order_execution_orders_canceled_total", symbol="BTCUSDT") == 1
    assert moved("order_execution_cache_hits_total") >= 6 and moved("order_execution_cache_misses_total") >= 1

    post = "POST /fapi/v1/order"
    assert moved("order_execution_exchange_requests_total", only_worker, endpoint=post) == 3
    assert moved("order_execution_exchange_latency_seconds_count", only_worker, endpoint=post) == 3
    assert moved("order_execution_exchange_errors_total", only_worker, endpoint=post, code="-5022") == 1
    assert (
        moved("order_execution_exchange_requests_total", only_worker, endpoint="DELETE /fapi/v1/order") == 1
    )
    assert total(listener, "order_execution_exchange_requests_total", endpoint="POST /fapi/v1/listenKey") >= 1
    for name in ("binance_create_order", "binance_cancel_order"):
        assert total(worker, "order_execution_circuit_breaker_state", name=name) == 0
        assert ("order_execution_circuit_breaker_state", (("name", name),)) in gateway

    # The cluster gauges, from Redis, on the gateway.
    # (Per exchange account: the stack trades the single account "default".)
    assert ("order_execution_queue_depth", (("account", "default"), ("symbol", "BTCUSDT"))) in gateway
    assert ("order_execution_orders_by_state", (("account", "default"), ("state", "UNKNOWN"))) in gateway
    assert total(gateway, "order_execution_orders_by_state", state="UNKNOWN") == 0
    assert total(gateway, "order_execution_rate_budget_remaining", window="orders_10s") > 0
    assert total(gateway, "order_execution_exchange_banned") == 0
    assert total(gateway, "order_execution_user_stream_connected") == 1
    assert total(gateway, "order_execution_workers_consuming") == 1
    assert total(listener, "order_execution_listener_leader") == 1
    assert ("order_execution_reconciliation_mismatches_total", (("kind", "state"),)) in listener

    # A client over its request rate is refused at the gateway: a rate-limit hit.
    hits = total(gateway, "order_execution_rate_limit_hits_total", limit="client_rate")
    refusals = 0
    for _ in range(40):
        try:
            await stub.CreateOrder(order("ETHUSDT", pb.BUY, "0.010", "2900.005"))
        except grpc.aio.AioRpcError as exc:
            refusals += exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refusals >= 1
    later = scrape(f"{stack.http_base}/metrics")
    assert total(later, "order_execution_rate_limit_hits_total", limit="client_rate") == hits + refusals
    served = {n for samples in (*scrape_all(stack).values(),) for n, _ in samples}
    for name in SEED_METRICS:
        assert any(n.startswith(name) for n in served), name


async def test_ambiguous_sends_are_counted_and_logged_with_the_orders_fields(
    stack: LocalStack, stub: order_pb2_grpc.OrderServiceAsyncStub
) -> None:
    await asyncio.sleep(2)  # the client's request budget refills after the burst above
    before = scrape(stack.metrics_urls["worker"])
    post = "POST /fapi/v1/order"
    placed = []
    for kind in ("drop_after_accept", "unknown_error_executed"):
        stack.admin("/admin/faults", {"endpoint": post, "kind": kind, "count": 1})
        created = await stub.CreateOrder(order("BTCUSDT", pb.SELL, "0.003"))
        placed.append(await settle(stub, created.order_id, {pb.FILLED}))  # found by the query, not re-sent
    after = scrape(stack.metrics_urls["worker"])

    def moved(code: str) -> float:
        labels = {"endpoint": post, "code": code}
        return total(after, "order_execution_exchange_errors_total", **labels) - total(
            before, "order_execution_exchange_errors_total", **labels
        )

    assert moved("no_answer") == 1 and moved("-1000") == 1
    assert stack.log_dir is not None
    lines = [json.loads(line) for line in (stack.log_dir / "worker.log").read_text().splitlines()]
    for placed_order in placed:
        about = [line for line in lines if line.get("order_id") == placed_order.order_id]
        assert about, f"no worker log line about {placed_order.order_id}"
        assert all(
            line["client_order_id"] == placed_order.client_order_id and line["symbol"] == "BTCUSDT"
            for line in about
        )


def test_health_reports_every_dependency(stack: LocalStack) -> None:
    wait_healthy(stack)
    status, text = get(f"{stack.http_base}/health")
    body = json.loads(text)
    assert status == 200 and body["status"] == "healthy", body
    assert body["version"] == metadata.version("order-execution")
    assert body["timestamp"].endswith("Z")
    checks = body["checks"]
    for name in ("redis", "nats", "exchange", "user_stream", "workers", "trading_rules", "rate_limits"):
        assert checks[name]["name"] == name and checks[name]["status"] == "healthy", checks[name]
        assert isinstance(checks[name]["duration_ms"], float | int) and checks[name]["duration_ms"] < 1000
    assert get(f"{stack.http_base}/health/live") == (200, "alive")
    assert get(f"{stack.http_base}/health/ready") == (200, "ready")


def test_unknown_paths_are_404(stack: LocalStack) -> None:
    for base in (stack.http_base, *(url.removesuffix("/metrics") for url in stack.metrics_urls.values())):
        assert get(f"{base}/nope")[0] == 404
        assert get(f"{base}/metrics/x")[0] == 404
    assert get(f"{stack.http_base}/")[0] == 404


def start_gateway(stack: LocalStack, name: str, env: dict[str, str]) -> tuple[ManagedProcess, str]:
    """Another gateway on the stack's settings plus `env`, on its own ports."""
    http_port = free_port()
    assert stack.log_dir is not None
    gateway = ManagedProcess(
        name,
        service_command("gateway"),
        {
            **stack.processes["gateway"].env,
            "ORDER_EXECUTION__SERVER__GRPC_PORT": str(free_port()),
            "ORDER_EXECUTION__SERVER__HTTP_PORT": str(http_port),
            **env,
        },
        log_dir=stack.log_dir,
        cwd=stack.log_dir,
    ).start()
    base = f"http://127.0.0.1:{http_port}"
    gateway.wait_until("serving HTTP", lambda: _up(base))
    return gateway, base


def _up(base: str) -> bool:
    try:
        return http_ok(f"{base}/health/live")
    except OSError:
        return False


def test_health_with_redis_unreachable(stack: LocalStack) -> None:
    gateway, base = start_gateway(stack, "gateway-dead-redis", {"REDIS_ADDRESS": f"127.0.0.1:{free_port()}"})
    try:
        status, text = get(f"{base}/health")
        body = json.loads(text)
        assert status == 503 and body["status"] == "unhealthy"
        assert body["checks"]["redis"]["status"] == "unhealthy" and "message" in body["checks"]["redis"]
        assert body["checks"]["redis"]["duration_ms"] < 3000
        ready_status, ready_text = get(f"{base}/health/ready")
        assert ready_status == 503 and ready_text.startswith("not ready: redis")
        assert get(f"{base}/health/live") == (200, "alive")
        assert get(f"{base}/metrics")[0] == 200  # still served, with what this process knows
    finally:
        gateway.stop()


def test_health_with_nats_and_exchange_unreachable(stack: LocalStack) -> None:
    dead = {
        "NATS_ADDRESS": f"nats://127.0.0.1:{free_port()}",
        "BINANCE_BASE_URL": f"http://127.0.0.1:{free_port()}",
    }
    gateway, base = start_gateway(stack, "gateway-dead-nats", dead)
    try:
        status, text = get(f"{base}/health")
        body = json.loads(text)
        assert status == 200 and body["status"] == "degraded", body
        checks = body["checks"]
        assert checks["nats"]["status"] == "unhealthy" and checks["exchange"]["status"] == "unhealthy"
        assert checks["redis"]["status"] == "healthy" and checks["trading_rules"]["status"] == "healthy"
        assert get(f"{base}/health/ready") == (200, "ready")
    finally:
        gateway.stop()


def test_bad_settings_start_names_the_key_and_hides_the_secret(stack: LocalStack) -> None:
    assert stack.log_dir is not None
    result = subprocess.run(
        [sys.executable, "-m", "order_execution.cli", "gateway"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env={
            **os.environ,
            "PYTHONPATH": str(REPO),
            "ORDER_EXECUTION__EXCHANGE__SECRET_KYE": stack.secret_key,  # a mistyped key
            "BINANCE_API_KEY": stack.api_key,
            "ORDER_EXECUTION__SERVER__GRPC_PORT": "not-a-port",
        },
    )
    (stack.log_dir / "bad-settings.log").write_text(result.stdout + result.stderr)
    assert result.returncode == 2
    assert "exchange.secret_kye" in result.stderr and "server.grpc_port" in result.stderr
    assert "got 'not-a-port'" in result.stderr  # an ordinary value is quoted
    assert stack.secret_key not in result.stderr


def test_no_worker_consuming_degrades_health(stack: LocalStack) -> None:
    stack.processes["worker"].stop()
    deadline = time.monotonic() + 25  # a stopped worker's heartbeat goes stale after 15 s
    while True:
        body = json.loads(get(f"{stack.http_base}/health")[1])
        if body["checks"]["workers"]["status"] == "unhealthy" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert body["status"] == "degraded" and "no worker" in body["checks"]["workers"]["message"]
    status, text = get(f"{stack.http_base}/health/ready")
    assert status == 200 and text.startswith("ready (degraded: no worker")


def test_logs_of_the_whole_run_hold_no_secret(stack: LocalStack) -> None:
    """Last in this module: every service log of the run, at debug level, and the bad-settings start."""
    assert stack.log_dir is not None
    # The simulator is the exchange's stand-in: it holds the account's keys by design.
    logs = [p for p in Path(stack.log_dir).glob("*.log") if p.name != "simulator.log"]
    names = {p.name for p in logs}
    assert {"gateway.log", "worker.log", "listener.log", "bad-settings.log"} <= names, names
    for path in logs:
        text = path.read_text(errors="replace")
        assert stack.secret_key not in text, path.name
        assert stack.api_key not in text, path.name
        assert "signature=" not in text.replace("signature=<redacted>", ""), path.name
    service = (Path(stack.log_dir) / "worker.log").read_text()
    lines = [json.loads(line) for line in service.splitlines() if line.startswith("{")]
    assert lines and all({"ts", "level", "process", "logger", "msg"} <= set(line) for line in lines)
