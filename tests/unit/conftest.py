"""Fixtures the unit tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import fakeredis
import pytest

from order_execution.orders import metrics
from order_execution.orders.model import DEFAULT_ACCOUNT
from order_execution.proto import order_pb2_grpc
from tests.unit.gateway_harness import running_gateway


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[order_pb2_grpc.OrderServiceAsyncStub, fakeredis.FakeAsyncRedis]]:
    """The gateway on a real gRPC socket over one fakeredis (orders and rules), auth off."""
    redis = fakeredis.FakeAsyncRedis()
    async with running_gateway(redis, redis) as stub:
        yield stub, redis
    await redis.aclose()


@pytest.fixture(autouse=True)
def _metric_accounts() -> Iterator[None]:
    """Each test starts with the metrics' account labels of a single-account process ("default"),
    whatever accounts an earlier test's gateway or worker configured."""
    if metrics.account_labels() != (DEFAULT_ACCOUNT,):
        metrics.set_accounts([DEFAULT_ACCOUNT])
    yield
