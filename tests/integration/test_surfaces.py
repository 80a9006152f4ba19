"""The service's other surfaces on the running stack: gRPC health and reflection, HTTP
probes and metrics, and the `order-execution order` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from order_execution.launcher.service_env import REPO
from order_execution.launcher.stack import LocalStack

pytestmark = pytest.mark.integration


def http_get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode()


def cli(service: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "order_execution.cli", "order", "--target", service.grpc_target, *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_grpc_health_and_reflection(service: LocalStack) -> None:
    with grpc.insecure_channel(service.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service="order.OrderService"), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = {s.name for answer in answers for s in answer.list_services_response.service}
    assert {"order.OrderService", "grpc.health.v1.Health"} <= names


def test_http_probes_and_metrics(service: LocalStack) -> None:
    assert http_get(f"{service.http_base}/health/live") == (200, "alive")
    assert http_get(f"{service.http_base}/health/ready") == (200, "ready")
    status, body = http_get(f"{service.http_base}/health")
    assert status == 200 and json.loads(body)["checks"]["redis"]["status"] == "healthy"
    cli(service, "create", "BTCUSDT", "BUY", "0.002", "--price", "50000")
    _, metrics = http_get(f"{service.http_base}/metrics")
    created = [  # labelled by the exchange account (`default`: the stack's one account)
        line
        for line in metrics.splitlines()
        if line.startswith('order_execution_orders_created_total{account="default"}')
    ]
    assert created and float(created[0].split()[1]) >= 1
    assert "order_execution_order_latency_seconds_bucket" in metrics


def test_human_cli(service: LocalStack) -> None:
    created = cli(
        service, "create", "ETHUSDT", "BUY", "0.010", "--price", "2900", "--client-id", "cli-test-1"
    )
    assert created.returncode == 0, created.stderr
    first = created.stdout.splitlines()[0]
    assert first.startswith("order ") and first.endswith(" NEW")
    order_id = first.split()[1]
    shown = cli(service, "get", order_id)
    assert shown.returncode == 0 and "client id      cli-test-1" in shown.stdout
    listed = cli(service, "list", "--symbol", "ETHUSDT")
    assert order_id in listed.stdout
    bad = cli(service, "create", "ETHUSDT", "BUY", "0.010", "--price", "2900.005")
    assert bad.returncode == 1
    assert bad.stderr.splitlines() == [
        "order-execution: INVALID_ARGUMENT: price: must be a multiple of tick size 0.01 (tickSize)",
        "  see `order-execution order create --help`",
    ]
    missing = cli(service, "get", "no-such-order")
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
