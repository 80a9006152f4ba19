"""The service as production runs it, API keys required: the stack's gateway gets only the
key's hash through the environment, as `up` passes it, and the CLI sends the key."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from order_execution.cli.main import main
from order_execution.gateway.auth import API_KEY_HEADER
from order_execution.launcher.stack import LocalStack, local_stack
from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc
from tests.redis_dbs import redis_db

pytestmark = pytest.mark.integration

AUTH_REDIS_DB = redis_db(__name__)


@pytest.fixture(scope="module")
def secured(
    real_redis: str, real_nats: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    with local_stack(
        real_redis,
        real_nats,
        redis_db=AUTH_REDIS_DB,
        log_dir=tmp_path_factory.mktemp("logs"),
        simulator_args=("--walk-interval-ms", "0", "--price", "BTCUSDT=50000"),
        auth=True,
    ) as stack:
        yield stack


async def test_a_key_is_required_and_the_owner_trades(secured: LocalStack) -> None:
    market = pb.CreateOrderRequest(symbol="BTCUSDT", side=pb.BUY, type=pb.MARKET, quantity="0.002")
    async with grpc.aio.insecure_channel(secured.grpc_target) as channel:
        stub = order_pb2_grpc.OrderServiceStub(channel)
        for metadata in ((), ((API_KEY_HEADER, "not-" + secured.grpc_api_key),)):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.CreateOrder(market, metadata=metadata, timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        key = ((API_KEY_HEADER, secured.grpc_api_key),)
        created = await stub.CreateOrder(market, metadata=key, timeout=5)
        for _ in range(100):
            got = await stub.GetOrder(pb.GetOrderRequest(order_id=created.order_id), metadata=key, timeout=5)
            if got.order.state == pb.FILLED:
                break
            await asyncio.sleep(0.05)
        assert got.order.state == pb.FILLED
        # gRPC health stays open: load balancers and probes carry no key.
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_the_cli_sends_the_key_from_the_environment(
    secured: LocalStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no .run/api-key here
    monkeypatch.setenv("ORDER_EXECUTION_CONFIG", "")
    monkeypatch.delenv("ORDER_EXECUTION_API_KEY", raising=False)
    assert main(["order", "--target", secured.grpc_target, "list", "--json"]) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    monkeypatch.setenv("ORDER_EXECUTION_API_KEY", secured.grpc_api_key)
    assert main(["order", "--target", secured.grpc_target, "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert all(order["symbol"] == "BTCUSDT" for order in listed["orders"])
