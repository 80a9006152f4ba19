"""Fixtures the unit tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import fakeredis
import pytest

from order_execution.proto import order_pb2_grpc
from tests.unit.gateway_harness import running_gateway


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[order_pb2_grpc.OrderServiceAsyncStub, fakeredis.FakeAsyncRedis]]:
    """The gateway on a real gRPC socket over one fakeredis (orders and rules), auth off."""
    redis = fakeredis.FakeAsyncRedis()
    async with running_gateway(redis, redis) as stub:
        yield stub, redis
    await redis.aclose()
