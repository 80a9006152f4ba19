"""Every gRPC error leaves through one map: a bug is INTERNAL with an error id the log line carries.

Over a real gRPC socket (the risk harness serves OrderService and AdminService on fakeredis),
with a failure planted where the servicer calls its work.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import fakeredis
import grpc
import pytest
import redis.exceptions

from order_execution.gateway.status_mapping import status_of
from order_execution.orders.errors import InvalidOrder, Overloaded
from order_execution.proto import admin_pb2 as apb
from order_execution.proto import order_pb2 as pb
from tests.unit.risk_harness import risk_replica

SECRET_DETAIL = "internals: host=10.1.2.3 path=/srv/app/desk.py"
ERROR_ID = re.compile(r"^internal error ([0-9a-f]{12}); the gateway log has the details$")


def boom(exc: Exception) -> Any:
    async def fail(*_: Any, **__: Any) -> Any:
        raise exc

    return fail


def internal_error_id(error: grpc.aio.AioRpcError) -> str:
    """The error id of an INTERNAL answer, after checking the message says nothing else."""
    assert error.code() == grpc.StatusCode.INTERNAL, (error.code(), error.details())
    details = error.details() or ""
    match = ERROR_ID.match(details)
    assert match, details
    assert "Error" not in details and "10.1.2.3" not in details and "<class" not in details
    return match.group(1)


def logged_with(caplog: pytest.LogCaptureFixture, error_id: str) -> logging.LogRecord:
    """The one ERROR record naming `error_id`; it must carry the traceback."""
    (record,) = [r for r in caplog.records if error_id in r.getMessage()]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None and record.exc_info[1] is not None
    return record


@pytest.mark.parametrize(
    "planted",
    [RuntimeError(SECRET_DETAIL), KeyError(SECRET_DETAIL), redis.exceptions.ResponseError(SECRET_DETAIL)],
    ids=["RuntimeError", "KeyError", "redis-ResponseError"],
)
async def test_an_unmapped_error_in_order_service_is_internal_with_the_logged_id(
    planted: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    redis_client = fakeredis.FakeAsyncRedis()
    async with risk_replica(redis_client) as replica:
        replica.store.get = boom(planted)  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR), pytest.raises(grpc.aio.AioRpcError) as caught:
            await replica.orders.GetOrder(pb.GetOrderRequest(order_id="o1"))
    error_id = internal_error_id(caught.value)
    record = logged_with(caplog, error_id)
    assert record.exc_info is not None and record.exc_info[1] is planted
    await redis_client.aclose()


async def test_two_failures_get_two_ids(caplog: pytest.LogCaptureFixture) -> None:
    redis_client = fakeredis.FakeAsyncRedis()
    async with risk_replica(redis_client) as replica:
        replica.store.get = boom(RuntimeError(SECRET_DETAIL))  # type: ignore[method-assign]
        ids = []
        for _ in range(2):
            with caplog.at_level(logging.ERROR), pytest.raises(grpc.aio.AioRpcError) as caught:
                await replica.orders.GetOrder(pb.GetOrderRequest(order_id="o1"))
            ids.append(internal_error_id(caught.value))
    assert ids[0] != ids[1]
    for error_id in ids:
        logged_with(caplog, error_id)
    await redis_client.aclose()


async def test_an_unmapped_error_in_admin_service_is_internal_with_the_logged_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis_client = fakeredis.FakeAsyncRedis()
    async with risk_replica(redis_client) as replica:
        replica.gate.state.limits = boom(ZeroDivisionError(SECRET_DETAIL))  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR), pytest.raises(grpc.aio.AioRpcError) as caught:
            await replica.admin.GetRiskLimits(apb.GetRiskLimitsRequest())
    logged_with(caplog, internal_error_id(caught.value))
    await redis_client.aclose()


async def test_mapped_errors_keep_their_status_and_message() -> None:
    redis_client = fakeredis.FakeAsyncRedis()
    async with risk_replica(redis_client) as replica:
        replica.store.get = boom(InvalidOrder("order_id", "is too long"))  # type: ignore[method-assign]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await replica.orders.GetOrder(pb.GetOrderRequest(order_id="o1"))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details() == "order_id: is too long"
        replica.store.get = boom(redis.exceptions.ConnectionError("refused"))  # type: ignore[method-assign]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await replica.orders.GetOrder(pb.GetOrderRequest(order_id="o1"))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert caught.value.details() == "order store (Redis) unreachable; retry shortly"
    await redis_client.aclose()


def test_status_of_maps_the_service_errors_and_calls_the_rest_internal() -> None:
    assert status_of(InvalidOrder("price", "x")) == grpc.StatusCode.INVALID_ARGUMENT
    assert status_of(Overloaded("full", limit="queue_bound")) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status_of(ValueError("bug")) == grpc.StatusCode.INTERNAL
