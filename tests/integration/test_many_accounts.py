"""Two exchange accounts on one stack, started as `up --accounts 2` starts it (the simulator with
both, the service told of them by key files).

- An order on each account (CreateOrder naming it, or naming none: the first account) reaches the
  simulator once, signed with that account's key, and its state comes back on the order.
- Account A (`acct-2`) flooded beyond Binance's ORDERS limits while B (`default`) sends 10
  orders/s: A gets no 429 and no REJECTED, its orders wait for its budget, and B's go straight
  out. B's submit -> sent p99 with A idle and with A flooded is printed; the bound asserted is far
  below what a queue shared with A's backlog would give (seconds: A's orders wait up to
  `worker.max_order_age_ms`, 10 s here) and far above what separate queues give (tens of ms).
  bench/account_flood.py measures the same two figures over several runs.

The stacks have a Redis of their own on a free port (the machine's Redis has no database left to
dedicate to a module, see tests/redis_dbs.py), and the machine's NATS, as every stack does.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import grpc
import pytest

from bench.account_flood import FLOOD_STACK_ENV, FLOODED, QUIET, describe, run_phase
from order_execution.launcher.launch import Launcher
from order_execution.launcher.processes import free_port
from order_execution.launcher.stack import LocalStack, local_stack
from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc
from tests.printing import uncaptured

pytestmark = pytest.mark.integration

FROZEN = ("--walk-interval-ms", "0", "--price", "BTCUSDT=50000", "--price", "ETHUSDT=3000")
OWN_REDIS_DB = 0  # the Redis started here holds nothing else


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of this module's own on a free 127.0.0.1 port, stopped by pid afterwards."""
    server = shutil.which("redis-server")
    assert server, "redis-server is not on the PATH"
    directory = tmp_path_factory.mktemp("redis")
    launcher = Launcher(directory, die_with_parent=True)
    port = free_port()
    launcher.redis(server, port, directory)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        launcher.stop()


@pytest.fixture(scope="module")
def stack(own_redis: str, real_nats: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with local_stack(
        own_redis,
        real_nats,
        redis_db=OWN_REDIS_DB,
        log_dir=tmp_path_factory.mktemp("logs"),
        simulator_args=FROZEN,
        accounts=2,
    ) as started:
        yield started


async def eventually(check: Callable[[], Any], what: str, timeout_s: float = 15.0) -> Any:
    """`check()`'s first truthy result (it may be a coroutine function), polled until `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def at_exchange(stack: LocalStack, client_order_id: str) -> list[dict[str, Any]]:
    """The simulator's orders with this client order id."""
    rows = stack.admin(f"/admin/orders?clientOrderId={client_order_id}")
    assert isinstance(rows, list)
    return rows


def at_exchange_of(stack: LocalStack, key: str) -> list[dict[str, Any]]:
    """The simulator's orders of the account with API key `key`."""
    rows = stack.admin(f"/admin/orders?account={key}")
    assert isinstance(rows, list)
    return rows


def posts(stack: LocalStack, client_order_id: str) -> list[dict[str, Any]]:
    """The order POSTs the simulator received for this client order id."""
    rows = stack.admin(f"/admin/requests?method=POST&path=/fapi/v1/order&clientOrderId={client_order_id}")
    assert isinstance(rows, list)
    return rows


async def test_an_order_on_each_account_reaches_the_exchange_under_its_own_key(
    stack: LocalStack, own_redis: str
) -> None:
    default, second = stack.accounts
    assert (default.name, second.name) == ("default", "acct-2") and default.key != second.key
    assert (stack.api_key, stack.secret_key) == default.credentials

    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        stub = order_pb2_grpc.OrderServiceStub(channel)
        on_default = await stub.CreateOrder(
            pb.CreateOrderRequest(
                symbol="BTCUSDT",
                side=pb.BUY,
                type=pb.LIMIT,
                quantity="0.003",
                price="49000.0",
                time_in_force=pb.GTC,
                client_order_id=f"it-default-{uuid.uuid4().hex[:8]}",
            )
        )
        assert on_default.order.account == "default"

        wanted = await stub.CreateOrder(
            pb.CreateOrderRequest(
                symbol="BTCUSDT",
                side=pb.BUY,
                type=pb.LIMIT,
                quantity="0.003",
                price="48000.0",
                time_in_force=pb.GTC,
                client_order_id=f"it-acct2-{uuid.uuid4().hex[:8]}",
                account="acct-2",
            )
        )
        assert wanted.order.account == "acct-2"

        for order_id, client_order_id, account in (
            (on_default.order_id, on_default.client_order_id, default),
            (wanted.order_id, wanted.client_order_id, second),
        ):
            [placed] = await eventually(
                partial(at_exchange, stack, client_order_id), f"{client_order_id} at the exchange"
            )
            assert placed["account"] == account.key and placed["status"] == "NEW"
            [post] = posts(stack, client_order_id)  # sent once, signed with its own account's key
            assert (post["account"], post["status"]) == (account.key, 200)

            async def acknowledged(oid: str = order_id) -> pb.Order | None:
                reply = await stub.GetOrder(pb.GetOrderRequest(order_id=oid))
                return reply.order if reply.order.state == pb.SUBMITTED else None

            order = await eventually(acknowledged, f"{order_id} SUBMITTED")
            assert order.account == account.name
            assert order.exchange_order_id == str(placed["orderId"])

    # Each account's orders, and only those, under its key at the exchange.
    mine = {a.name: at_exchange_of(stack, a.key) for a in stack.accounts}
    assert {name: [row["clientOrderId"] for row in rows] for name, rows in mine.items()} == {
        "default": [on_default.client_order_id],
        "acct-2": [wanted.client_order_id],
    }


# --- one account flooded, the other not held back ---------------------------------------------

FLOOD_DB = 1  # on the module's own Redis, beside the first stack's db
B_P99_BOUND_MS = 1000.0  # shared queue: seconds behind A's backlog; separate queues: tens of ms


@pytest.fixture(scope="module")
def flood_stack(
    own_redis: str, real_nats: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    with local_stack(
        own_redis,
        real_nats,
        redis_db=FLOOD_DB,
        log_dir=tmp_path_factory.mktemp("flood-logs"),
        accounts=2,
        extra_env=FLOOD_STACK_ENV,
    ) as started:
        yield started


async def test_a_flooded_account_waits_for_its_budget_without_delaying_another(
    flood_stack: LocalStack, request: pytest.FixtureRequest
) -> None:
    keys = {account.name: account.key for account in flood_stack.accounts}
    phase = partial(
        run_phase,
        grpc_target=flood_stack.grpc_target,
        exchange_base=flood_stack.exchange_base,
        account_keys=keys,
        seconds=8.0,
    )
    idle = await phase(name="idle", rates={QUIET: 10.0}, settle_s=3.0)
    flooded = await phase(name="flooded", rates={FLOODED: 60.0, QUIET: 10.0})
    idle_p99, flooded_p99 = idle.p99(QUIET), flooded.p99(QUIET)
    with uncaptured(request):
        print(f"\n{describe(idle)}\n{describe(flooded)}")
        print(
            f"B submit -> sent p99: A idle {idle_p99:.1f} ms, A flooded {flooded_p99:.1f} ms "
            f"(bound {B_P99_BOUND_MS:.0f} ms)"
        )

    # A went beyond Binance's ORDERS limits (300 per 10 s, here x0.9 safety x0.8 for creates)...
    assert flooded.placed[FLOODED] == 480
    # ...got no 429 and no REJECTED: what its budget could not send in time was refused at the
    # gateway (RESOURCE_EXHAUSTED; how many depends on where the budget's windows fall), the
    # rest waited for the budget and went out.
    assert flooded.answered_429[FLOODED] == 0 and flooded.rejected[FLOODED] == 0
    a_sent = flooded.sent_ms[FLOODED]
    assert flooded.refused[FLOODED] + len(a_sent) == flooded.placed[FLOODED]
    assert len(a_sent) >= 200 and max(a_sent) > 2000, "A's orders did not wait for A's budget"
    # B: every order sent, none refused, none waited behind A.
    for result in (idle, flooded):
        assert result.refused[QUIET] == 0 and result.never_sent[QUIET] == 0
        assert len(result.sent_ms[QUIET]) == 80 and result.answered_429[QUIET] == 0
    assert flooded_p99 is not None and flooded_p99 < B_P99_BOUND_MS
