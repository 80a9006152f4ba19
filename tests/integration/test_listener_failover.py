"""Two listener replicas: one leads; kill -9 it and the standby takes over within about
one lease, after which fills still reach the order store. With two exchange accounts, each
account has its own lease: the replica leading account b is killed and the other takes b over,
and b's fills, placed after the kill, reach b's orders through b's user-data stream."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
import redis
import redis.asyncio as aioredis

from order_execution.launcher.stack import local_stack
from order_execution.orders.listener_status import ListenerStatus
from order_execution.orders.model import Order, OrderType, Side, now_ms
from order_execution.orders.store import OrderStore
from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc
from order_execution.runtime.addresses import redis_url
from order_execution.tasks.messages import submit_order_push
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


# The account `default` trades with the stack's key, account b with one of its own; both are
# accounts of the one simulator (`--account` given twice).
TWO_ACCOUNTS_YAML = """
accounts:
  - name: default
    api_key: ${BINANCE_API_KEY}
    secret_key: ${BINANCE_SECRET_KEY}
  - name: b
    api_key: ${ACCOUNT_B_API_KEY}
    secret_key: ${ACCOUNT_B_SECRET_KEY}
"""
LEASES = {"default": "oe:listener:lease", "b": "oe:@b:listener:lease"}


def _holder_pid(value: str) -> int:
    return int(value.rsplit(":", 1)[1])


async def _place_on_b(store: OrderStore) -> Order:
    """A MARKET order of account b, stored and queued on b's queue as a gateway taking an order
    for account b does (straight into the store: this test is about the listener)."""
    order = Order(
        order_id=str(uuid.uuid4()),
        client_order_id=f"oe-{uuid.uuid4().hex}",
        symbol="BTCUSDT",
        side=Side.BUY,
        type=OrderType.MARKET,
        quantity=Decimal("0.002"),
        price=None,
        time_in_force=None,
        account="b",
    )
    assert (await store.create(order, enqueue=submit_order_push)).created
    return order


async def _until_filled(store: OrderStore, order_id: str, what: str) -> Order:
    deadline = time.monotonic() + 10
    while not (order := await store.get(order_id)).fills:
        assert time.monotonic() < deadline, f"no fill recorded for {what}: {order.state}"
        await asyncio.sleep(0.1)
    return order


async def _status_until(status: ListenerStatus, done: Callable[[dict[str, str]], bool], what: str) -> None:
    """Until account b's listener status satisfies `done` (5 s at most)."""
    deadline = time.monotonic() + 5
    while not done(current := await status.read("b")):
        assert time.monotonic() < deadline, f"{what}: account b's listener status is {current}"
        await asyncio.sleep(0.05)


async def test_each_account_is_taken_over_on_its_own_and_its_fills_still_land(
    real_redis: str, real_nats: str, tmp_path: Path
) -> None:
    key_b, secret_b = secrets.token_hex(32), secrets.token_hex(32)
    config = tmp_path / "accounts.yaml"
    config.write_text(TWO_ACCOUNTS_YAML)
    with local_stack(
        real_redis,
        real_nats,
        redis_db=FAILOVER_REDIS_DB,
        log_dir=tmp_path / "logs",
        listeners=2,
        simulator_args=("--walk-interval-ms", "0", "--account", f"{key_b}:{secret_b}"),
        extra_env={
            "ORDER_EXECUTION_CONFIG": str(config),
            "ACCOUNT_B_API_KEY": key_b,
            "ACCOUNT_B_SECRET_KEY": secret_b,
            "ORDER_EXECUTION__LISTENER__LEASE_TTL_MS": str(LEASE_TTL_MS),
        },
    ) as stack:
        leases = redis.Redis.from_url(f"redis://{real_redis}/{FAILOVER_REDIS_DB}", decode_responses=True)
        pids = {p.pid for name, p in stack.processes.items() if name.startswith("listener")}
        deadline = time.monotonic() + 10
        while not all((holders := {a: str(leases.get(key) or "") for a, key in LEASES.items()}).values()):
            assert time.monotonic() < deadline, f"not every account has a leader: {holders}"
            time.sleep(0.1)
        assert {_holder_pid(h) for h in holders.values()} <= pids

        client = aioredis.Redis.from_url(redis_url(real_redis, db=FAILOVER_REDIS_DB))
        store = OrderStore(client)
        try:
            before = await _place_on_b(store)  # b works before the kill
            await _until_filled(store, before.order_id, "account b's order before the kill")

            b_leader = holders["b"]
            os.kill(_holder_pid(b_leader), signal.SIGKILL)
            killed_at = time.monotonic()
            while (holder := str(leases.get(LEASES["b"]) or "")) in ("", b_leader):
                assert time.monotonic() - killed_at < LEASE_TTL_MS / 1000 + 3, "nobody took account b over"
                time.sleep(0.05)
            took_s = time.monotonic() - killed_at
            survivor = _holder_pid(holder)
            assert survivor in pids - {_holder_pid(b_leader)}
            print(f"account b taken over {took_s:.2f} s after its leader was killed")
            if holders["default"] != b_leader:  # the survivor led `default` already: it still does
                assert leases.get(LEASES["default"]) == holders["default"]
            else:  # the killed replica led both: the survivor takes `default` over too
                while leases.get(LEASES["default"]) != holder:
                    assert time.monotonic() - killed_at < LEASE_TTL_MS / 1000 + 3, "nobody took default over"
                    time.sleep(0.05)

            # Once the survivor has b's stream (events sent while no stream is connected are lost, at
            # Binance too, and left to the reconciler), an order placed now is filled through it.
            b_status = ListenerStatus(client, namespace="oe")
            await _status_until(
                b_status,
                lambda s: s.get("leader") == holder and s.get("user_stream") == "connected",
                "b's stream",
            )
            placed_at = now_ms()
            after = await _place_on_b(store)
            filled = await _until_filled(store, after.order_id, "account b's order after the takeover")
            assert filled.account == "b" and filled.filled_quantity == Decimal("0.002")
            # The news came on b's stream (its status is rewritten every third of a lease).
            await _status_until(
                b_status, lambda s: int(s.get("last_event_at", 0)) >= placed_at, "an event on b's stream"
            )
        finally:
            await client.aclose()

        deadline = time.monotonic() + 10
        while (check := stack.health()["checks"]["user_stream"])["status"] != "healthy":
            assert time.monotonic() < deadline, f"listener health after the takeover: {check}"
            time.sleep(0.1)
        assert f"b: connected (listener {holder}" in str(check["message"])
        assert str(check["message"]).startswith("default: connected")
        leases.close()
