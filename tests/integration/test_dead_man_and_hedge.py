"""The dead-man switch, hedge mode and account settings on a real stack (simulator, workers, gateway).

* Resting orders outlive the service only by the countdown: while the service runs the listener keeps
  re-arming countdownCancelAll; after every service process is killed (-9) the simulator cancels them.
* In hedge mode a worker detects the mode at start and sends positionSide (LONG/SHORT) on its orders.
* Leverage and margin type are set through AccountService (and `order-execution account`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import grpc
import pytest

from order_execution.launcher.stack import LocalStack, local_stack
from order_execution.proto import admin_pb2 as apb
from order_execution.proto import admin_pb2_grpc, order_pb2_grpc
from order_execution.proto import order_pb2 as pb
from tests.redis_dbs import redis_db

pytestmark = pytest.mark.integration

DEAD_MAN_REDIS_DB = redis_db(__name__)
INTERVAL_S = 1.0
COUNTDOWN_MS = 4000
FROZEN = ("--walk-interval-ms", "0", "--price", "BTCUSDT=50000", "--price", "ETHUSDT=3000")


def _stack(real_redis: str, real_nats: str, tmp_path: Path) -> Any:
    return local_stack(
        real_redis,
        real_nats,
        redis_db=DEAD_MAN_REDIS_DB,
        log_dir=tmp_path / "logs",
        simulator_args=FROZEN,
        extra_env={
            "ORDER_EXECUTION__DEAD_MAN__INTERVAL_S": str(INTERVAL_S),
            "ORDER_EXECUTION__DEAD_MAN__COUNTDOWN_MS": str(COUNTDOWN_MS),
            "ORDER_EXECUTION__RECONCILE__INTERVAL_S": "1",
        },
    )


def signed(stack: LocalStack, method: str, path: str, **params: str) -> Any:
    """A signed REST call to the simulator as the service's account."""
    query = urlencode({**params, "timestamp": str(int(time.time() * 1000))})
    signature = hmac.new(stack.secret_key.encode(), query.encode(), hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        f"{stack.exchange_base}{path}?{query}&signature={signature}",
        method=method,
        headers={"X-MBX-APIKEY": stack.api_key},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def sim_orders(stack: LocalStack) -> dict[str, dict[str, Any]]:
    rows = stack.admin("/admin/orders")
    assert isinstance(rows, list)
    return {row["clientOrderId"]: row for row in rows}


def armed_countdowns(stack: LocalStack) -> list[str]:
    """Symbols whose countdownCancelAll timer runs at the simulator, for the service's account."""
    state = stack.admin("/admin/state")
    assert isinstance(state, dict)
    return list(state["accounts"][0]["countdowns"])


async def until(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
    return result


async def test_the_exchange_cancels_resting_orders_after_the_service_is_killed(
    real_redis: str, real_nats: str, tmp_path: Path
) -> None:
    with _stack(real_redis, real_nats, tmp_path) as stack:
        async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
            stub = order_pb2_grpc.OrderServiceStub(channel)
            client_ids = []
            for price in ("40000", "41000"):
                created = await stub.CreateOrder(
                    pb.CreateOrderRequest(
                        symbol="BTCUSDT",
                        side=pb.BUY,
                        type=pb.LIMIT,
                        quantity="0.010",
                        price=price,
                        time_in_force=pb.GTC,
                    )
                )
                client_ids.append(created.order.client_order_id)
        await until(
            lambda: all(sim_orders(stack).get(c, {}).get("status") == "NEW" for c in client_ids),
            15,
            "both orders resting at the simulator",
        )
        await until(lambda: armed_countdowns(stack) == ["BTCUSDT"], 10, "the countdown to be armed")
        # While the service lives, its heartbeats keep the orders alive well past one countdown.
        await asyncio.sleep(COUNTDOWN_MS / 1000 + 1.5)
        assert {sim_orders(stack)[c]["status"] for c in client_ids} == {"NEW"}

        for name, process in stack.processes.items():
            if name != "simulator":
                os.kill(process.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        await until(
            lambda: all(sim_orders(stack)[c]["status"] == "CANCELED" for c in client_ids),
            COUNTDOWN_MS / 1000 + 3,
            "the simulator to cancel the orders of the dead service",
        )
        elapsed = time.monotonic() - killed_at
        # Canceled by the countdown: no sooner than a countdown after the last heartbeat.
        assert elapsed >= (COUNTDOWN_MS / 1000) - INTERVAL_S - 0.5, elapsed
        print(f"resting orders canceled {elapsed:.2f} s after the service was killed")


async def test_hedge_mode_orders_carry_their_position_side(
    real_redis: str, real_nats: str, tmp_path: Path
) -> None:
    with _stack(real_redis, real_nats, tmp_path) as stack:
        assert signed(stack, "POST", "/fapi/v1/positionSide/dual", dualSidePosition="true")["code"] == 200
        worker = stack.processes["worker"]
        worker.stop()
        worker.start(append=True)  # a fresh worker detects hedge mode at start
        async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
            stub = order_pb2_grpc.OrderServiceStub(channel)

            async def place(side: pb.OrderSide.ValueType, quantity: str, *, reduce_only: bool = False) -> str:
                created = await stub.CreateOrder(
                    pb.CreateOrderRequest(
                        symbol="BTCUSDT",
                        side=side,
                        type=pb.MARKET,
                        quantity=quantity,
                        reduce_only=reduce_only,
                    )
                )
                order_id = created.order.order_id

                async def state() -> int:
                    return int((await stub.GetOrder(pb.GetOrderRequest(order_id=order_id))).order.state)

                deadline = time.monotonic() + 20
                while (current := await state()) != pb.FILLED:
                    assert current not in (pb.REJECTED, pb.EXPIRED, pb.CANCELED), (current, order_id)
                    assert time.monotonic() < deadline, f"order {order_id} never filled"
                    await asyncio.sleep(0.1)
                return created.order.client_order_id

            opened_long = await place(pb.BUY, "0.020")
            opened_short = await place(pb.SELL, "0.010")
            closed_long = await place(pb.SELL, "0.005", reduce_only=True)
        at_sim = sim_orders(stack)
        assert [at_sim[c]["positionSide"] for c in (opened_long, opened_short, closed_long)] == [
            "LONG",
            "SHORT",
            "LONG",
        ]
        assert at_sim[closed_long]["reduceOnly"] is False  # hedge mode refuses reduceOnly
        sides = {
            row["positionSide"]: Decimal(row["positionAmt"])
            for row in signed(stack, "GET", "/fapi/v2/positionRisk", symbol="BTCUSDT")
        }
        assert sides == {"LONG": Decimal("0.015"), "SHORT": Decimal("-0.010")}


async def test_leverage_and_margin_type_through_the_account_service(
    real_redis: str, real_nats: str, tmp_path: Path
) -> None:
    with _stack(real_redis, real_nats, tmp_path) as stack:
        async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
            account = admin_pb2_grpc.AccountServiceStub(channel)
            set_leverage = await account.SetLeverage(apb.SetLeverageRequest(symbol="BTCUSDT", leverage=10))
            assert (set_leverage.leverage, set_leverage.max_notional) == (10, "230000000")
            margin = apb.SetMarginTypeRequest(symbol="BTCUSDT", margin_type=apb.ISOLATED)
            assert (await account.SetMarginType(margin)).changed is True
            assert (await account.SetMarginType(margin)).changed is False  # -4046 is not an error
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await account.SetLeverage(apb.SetLeverageRequest(symbol="BTCUSDT", leverage=126))
            assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT

            shown = await account.GetAccountSettings(apb.GetAccountSettingsRequest())
            by_symbol = {s.symbol: s for s in shown.symbols}
            assert shown.position_mode == apb.ONE_WAY
            assert (by_symbol["BTCUSDT"].leverage, by_symbol["BTCUSDT"].margin_type) == (10, apb.ISOLATED)
            assert by_symbol["ETHUSDT"].margin_type == apb.CROSSED

            orders = order_pb2_grpc.OrderServiceStub(channel)
            resting = await orders.CreateOrder(
                pb.CreateOrderRequest(
                    symbol="BTCUSDT",
                    side=pb.BUY,
                    type=pb.LIMIT,
                    quantity="0.010",
                    price="40000",
                    time_in_force=pb.GTC,
                )
            )
            client_id = resting.order.client_order_id
            await until(
                lambda: sim_orders(stack).get(client_id, {}).get("status") == "NEW", 15, "a resting order"
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await account.SetMarginType(
                    apb.SetMarginTypeRequest(symbol="BTCUSDT", margin_type=apb.CROSSED)
                )
            assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert "-4047" in (refused.value.details() or "")

        risk = signed(stack, "GET", "/fapi/v2/positionRisk", symbol="BTCUSDT")[0]
        assert (risk["leverage"], risk["marginType"]) == ("10", "isolated")
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "order_execution.cli",
                "account",
                "leverage",
                "ETHUSDT",
                "5",
                "--target",
                stack.grpc_target,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "ORDER_EXECUTION_CONFIG": ""},
        )
        assert cli.returncode == 0, cli.stderr
        assert "ETHUSDT: leverage 5x" in cli.stdout
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "order_execution.cli",
                "account",
                "show",
                "--json",
                "--target",
                stack.grpc_target,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "ORDER_EXECUTION_CONFIG": ""},
        )
        assert cli.returncode == 0, cli.stderr
        shown_json = json.loads(cli.stdout)
        assert {s["symbol"]: s["leverage"] for s in shown_json["symbols"]} == {"BTCUSDT": 10, "ETHUSDT": 5}
