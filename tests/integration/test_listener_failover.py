"""Two listener replicas: one leads; kill -9 it and the standby takes over within about
one lease, after which fills still reach the order store."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import grpc
import pytest
import redis

from order_execution.launcher.stack import local_stack
from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc
from tests.redis_dbs import redis_db

pytestmark = pytest.mark.integration

FAILOVER_REDIS_DB = redis_db(__name__)
LEASE_TTL_MS = 1000


async def test_the_standby_listener_takes_over_when_the_leader_is_killed(
    real_redis: str, real_nats: str, tmp_path: Path
) -> None:
    with local_stack(
        real_redis,
        real_nats,
        redis_db=FAILOVER_REDIS_DB,
        log_dir=tmp_path / "logs",
        listeners=2,
        simulator_args=("--walk-interval-ms", "0"),
        extra_env={"ORDER_EXECUTION__LISTENER__LEASE_TTL_MS": str(LEASE_TTL_MS)},
    ) as stack:
        lease = redis.Redis.from_url(f"redis://{real_redis}/{FAILOVER_REDIS_DB}", decode_responses=True)
        deadline = time.monotonic() + 10
        while not (leader := str(lease.get("oe:listener:lease") or "")):
            assert time.monotonic() < deadline, "no listener took the lease"
            time.sleep(0.1)
        leader_pid = int(leader.rsplit(":", 1)[1])
        pids = {p.pid for name, p in stack.processes.items() if name.startswith("listener")}
        assert leader_pid in pids

        os.kill(leader_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        while (holder := str(lease.get("oe:listener:lease") or "")) in ("", leader):
            assert time.monotonic() - killed_at < 3 * LEASE_TTL_MS / 1000 + 2, "the standby never took over"
            time.sleep(0.05)
        assert int(holder.rsplit(":", 1)[1]) in pids - {leader_pid}
        print(f"standby took over {time.monotonic() - killed_at:.2f} s after the leader was killed")

        # The new leader holds the user stream: a MARKET order gets its trade recorded.
        async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
            stub = order_pb2_grpc.OrderServiceStub(channel)
            created = await stub.CreateOrder(
                pb.CreateOrderRequest(symbol="BTCUSDT", side=pb.BUY, type=pb.MARKET, quantity="0.002")
            )
            deadline = time.monotonic() + 10
            while not (await stub.GetOrder(pb.GetOrderRequest(order_id=created.order_id))).order.fills:
                assert time.monotonic() < deadline, "no fill recorded after the takeover"
                await asyncio.sleep(0.1)
        deadline = time.monotonic() + 10
        while (listener := stack.health()["checks"]["user_stream"])["status"] != "healthy":
            assert time.monotonic() < deadline, f"listener health after takeover: {listener}"
            time.sleep(0.1)
        lease.close()
