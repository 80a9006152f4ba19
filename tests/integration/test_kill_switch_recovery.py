"""The kill switch's cancel of every open order survives the gateway that took it: the leading
listener finishes a cancel-open left pending, on the whole stack against the simulator."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
import redis.asyncio as aioredis

from order_execution.launcher.processes import http_ok
from order_execution.launcher.stack import LocalStack, local_stack
from order_execution.orders.cancel_open import CancelOpenState
from order_execution.orders.model import OrderState
from order_execution.orders.risk_state import RiskState, TradingMode
from order_execution.orders.store import OrderStore
from order_execution.proto import admin_pb2 as apb
from order_execution.proto import admin_pb2_grpc, order_pb2_grpc
from order_execution.proto import order_pb2 as pb
from order_execution.service_layer.kill_switch import LISTENER_ACTION, cancel_enqueue, request_cancel
from order_execution.tasks.messages import cancel_order_push
from tests.redis_dbs import redis_db

pytestmark = pytest.mark.integration

RECOVERY_REDIS_DB = redis_db(__name__)  # this module's own database
GRACE_MS = 2000
# Grace period, the listener's 1 s check, the workers' cancels at the exchange, with room to spare.
FINISH_WITHIN_S = GRACE_MS / 1000 + 15
RESTING = pb.CreateOrderRequest(
    symbol="BTCUSDT", side=pb.BUY, type=pb.LIMIT, quantity="0.003", price="48000", time_in_force=pb.GTC
)


@pytest.fixture(scope="module")
def stack(real_redis: str, real_nats: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with local_stack(
        real_redis,
        real_nats,
        redis_db=RECOVERY_REDIS_DB,
        log_dir=tmp_path_factory.mktemp("logs"),
        simulator_args=("--walk-interval-ms", "0", "--price", "BTCUSDT=50000", "--price", "ETHUSDT=3000"),
        extra_env={"ORDER_EXECUTION__RISK__CANCEL_OPEN_GRACE_MS": str(GRACE_MS)},
    ) as running:
        yield running


@pytest.fixture
async def client(real_redis: str) -> AsyncIterator[aioredis.Redis]:
    """The stack's database; trading is ACTIVE again afterwards (a pending cancel-open dropped), on
    the account's switch and on the switch for every account."""
    connection = aioredis.Redis.from_url(f"redis://{real_redis}/{RECOVERY_REDIS_DB}")
    yield connection
    await RiskState(connection).set_mode(TradingMode.ACTIVE, actor="test", reason="cleanup")
    await RiskState(connection).every_account.set_mode(TradingMode.ACTIVE, actor="test", reason="cleanup")
    await connection.aclose()


async def place_resting(stack: LocalStack, count: int) -> list[pb.Order]:
    """`count` BUY LIMIT orders below the price, resting at the exchange (SUBMITTED)."""
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        stub = order_pb2_grpc.OrderServiceStub(channel)
        ids = [(await stub.CreateOrder(RESTING, timeout=5)).order_id for _ in range(count)]
        placed = []
        deadline = time.monotonic() + 30
        for order_id in ids:
            while (order := (await stub.GetOrder(pb.GetOrderRequest(order_id=order_id))).order).state != (
                pb.SUBMITTED
            ):
                assert time.monotonic() < deadline, f"{order_id} stayed {pb.OrderState.Name(order.state)}"
                await asyncio.sleep(0.05)
            placed.append(order)
    return placed


def open_at_exchange(stack: LocalStack, orders: list[pb.Order]) -> list[str]:
    """Client ids of `orders` the simulator does not show CANCELED yet."""
    rows = stack.admin("/admin/orders?symbol=BTCUSDT")
    assert isinstance(rows, list)
    status = {row["clientOrderId"]: row["status"] for row in rows}
    return [o.client_order_id for o in orders if status.get(o.client_order_id) != "CANCELED"]


async def wait_canceled_at_exchange(stack: LocalStack, orders: list[pb.Order], since: float) -> float:
    """Seconds from `since` until the simulator shows every one of `orders` CANCELED."""
    while still_open := open_at_exchange(stack, orders):
        assert time.monotonic() - since < FINISH_WITHIN_S, (
            f"{len(still_open)} of {len(orders)} orders still open at the exchange after "
            f"{FINISH_WITHIN_S:.0f} s: {still_open[:5]}"
        )
        await asyncio.sleep(0.1)
    return time.monotonic() - since


async def test_the_listener_finishes_a_cancel_open_left_pending_by_a_dead_gateway(
    stack: LocalStack, client: aioredis.Redis
) -> None:
    risk, store = RiskState(client), OrderStore(client)
    orders = await place_resting(stack, 4)
    # What a gateway replica that died one order into its walk left behind: HALTED with the
    # cancel-open recorded (one transaction), and the first order's cancel queued.
    status = await risk.set_mode(TradingMode.HALTED, actor="ops", reason="replica died", cancel_open=True)
    started = time.monotonic()
    first = await store.transition(
        orders[0].order_id, request_cancel, enqueue=cancel_enqueue(cancel_order_push)
    )
    assert first.order.state is OrderState.PENDING_CANCEL

    trading = stack.health()["checks"]["trading"]  # the surviving gateway says it is pending
    assert "HALTED" in str(trading["message"]) and "pending since" in str(trading["message"])

    took = await wait_canceled_at_exchange(stack, orders, started)
    print(f"every open order canceled at the exchange {took:.1f} s after the gateway's walk stopped")
    done = await risk.cancel_open()
    assert done is not None and status.cancel_open is not None
    assert done.request_id == status.cancel_open.request_id and done.state is CancelOpenState.DONE
    assert done.done_by.startswith("listener ") and done.canceled_orders == 3
    entry = (await risk.audit())[0]
    assert (entry.action, entry.reason, entry.canceled_orders) == (LISTENER_ACTION, "replica died", 3)
    assert entry.actor == done.done_by
    assert "pending" not in str(stack.health()["checks"]["trading"]["message"])


async def test_kill_9_of_the_gateway_mid_walk(stack: LocalStack, client: aioredis.Redis) -> None:
    """The real thing: halt --cancel-open, the gateway frozen and killed once its walk has begun."""
    risk, store = RiskState(client), OrderStore(client)
    orders = await place_resting(stack, 30)
    gateway = stack.processes["gateway"]
    halt = apb.SetTradingModeRequest(mode=apb.HALTED, reason="kill -9 drill", cancel_open=True)

    def call_halt() -> None:
        with grpc.insecure_channel(stack.grpc_target) as channel, contextlib.suppress(grpc.RpcError):
            admin_pb2_grpc.AdminServiceStub(channel).SetTradingMode(halt, timeout=10)

    ids = [o.order_id for o in orders]

    async def walked() -> list[str]:
        """Orders the walk reached: their cancel queued, or already done by a worker."""
        return [o.order_id for o in await store.get_many(ids) if o.state is not OrderState.SUBMITTED]

    caller = threading.Thread(target=call_halt)
    caller.start()
    deadline = time.monotonic() + 10
    while not await walked():  # polled tight: the walk over 30 orders takes a few ms
        assert time.monotonic() < deadline, "the gateway never started its walk"
    os.kill(gateway.pid, signal.SIGSTOP)  # frozen mid-walk; then gone without a word
    stopped_at = time.monotonic()
    os.kill(gateway.pid, signal.SIGKILL)
    assert gateway.process is not None
    gateway.process.wait(timeout=5)
    caller.join(timeout=15)

    every_account = risk.every_account  # the switch a SetTradingMode naming no account sets
    pending = (await every_account.mode()).cancel_open
    assert pending is not None and pending.reason == "kill -9 drill", "the gateway finished before the kill"
    done_by_gateway = await walked()
    assert len(done_by_gateway) < len(orders), "the gateway had walked every order before it was stopped"
    print(f"gateway killed after walking {len(done_by_gateway)} of {len(orders)} orders")

    took = await wait_canceled_at_exchange(stack, orders, stopped_at)
    print(f"every open order canceled at the exchange {took:.1f} s after the gateway died")
    done = await every_account.cancel_open()
    assert done is not None and done.state is CancelOpenState.DONE and done.done_by.startswith("listener ")
    assert (await risk.audit())[0].action == LISTENER_ACTION

    gateway.start(append=True)  # back for the other tests of this module
    gateway.wait_until("ready", lambda: http_ok(f"{stack.http_base}/health/ready"), timeout_s=60)
