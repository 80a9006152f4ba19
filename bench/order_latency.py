"""End-to-end order latency on real parts, each process on its own.

Starts simulator, one worker and the gateway (launcher/stack.py) on the machine's Redis and
NATS, then per run sends `--n` MARKET orders (BUY/SELL alternating, so the position
stays flat) paced at `--rate`/s and measures, from the strategy's side:
  * CreateOrder: the RPC until the order is stored and queued (state NEW);
  * create -> FILLED: until the FILLED update arrives on StreamOrderUpdates, i.e.
    gateway, queue hop, worker, signed POST to the simulator, store write, NATS, stream;
  * after idle: the same for single orders after `--idle-s` of silence;
  * baseline: GetOrder, the cheapest gRPC call that touches Redis, in the same run.

Usage: python bench/order_latency.py [--runs 3] [--n 300] [--rate 50]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.redis_db import BENCH_REDIS_DB
from bench.report import report
from order_execution.launcher.stack import local_stack
from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc

REDIS = "127.0.0.1:6379"
NATS = "nats://127.0.0.1:4222"
BENCH_DB = BENCH_REDIS_DB  # the benches' own db, never a test's (see bench/redis_db.py)
# The shared budget stays on (its cost is part of what is measured) but far above the load.
SERVICE_ENV = {
    "ORDER_EXECUTION__RATE_LIMIT__REQUESTS_PER_SECOND": "100000",
    "ORDER_EXECUTION__RATE_LIMIT__BURST": "100000",
}
SIM_ARGS = (
    "--walk-interval-ms",
    "0",
    "--weight-limit",
    "100000000",
    "--orders-per-10s",
    "100000000",
    "--orders-per-minute",
    "100000000",
)


async def one_run(target: str, n: int, rate: float, probes: int, idle_s: float) -> dict[str, list[float]]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = order_pb2_grpc.OrderServiceStub(channel)
        filled: dict[str, asyncio.Future[float]] = {}
        loop = asyncio.get_running_loop()

        def final_update(order_id: str) -> asyncio.Future[float]:
            # the update may arrive before CreateOrder's reply has been handled
            return filled.setdefault(order_id, loop.create_future())

        stream = stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest(symbols=["BTCUSDT"]))

        async def read_stream() -> None:
            async for update in stream:
                if update.order.state in (pb.FILLED, pb.REJECTED, pb.EXPIRED):
                    future = final_update(update.order.order_id)
                    if not future.done():
                        future.set_result(time.perf_counter())

        reader = asyncio.create_task(read_stream())
        await asyncio.sleep(0.3)
        results: dict[str, list[float]] = {
            "GetOrder (baseline)": [],
            "CreateOrder": [],
            "create -> FILLED": [],
            "after idle: create -> FILLED": [],
        }

        async def place(seq: int) -> tuple[float, float]:
            started = time.perf_counter()
            reply = await stub.CreateOrder(
                pb.CreateOrderRequest(
                    symbol="BTCUSDT",
                    side=pb.BUY if seq % 2 == 0 else pb.SELL,
                    type=pb.MARKET,
                    quantity="0.002",
                )
            )
            created = time.perf_counter()
            done_at = await asyncio.wait_for(final_update(reply.order_id), timeout=10)
            t0 = time.perf_counter()
            await stub.GetOrder(pb.GetOrderRequest(order_id=reply.order_id))
            results["GetOrder (baseline)"].append((time.perf_counter() - t0) * 1000)
            return (created - started) * 1000, (done_at - started) * 1000

        tasks = []
        for seq in range(n):
            tasks.append(asyncio.create_task(place(seq)))
            await asyncio.sleep(1 / rate)
        for rpc_ms, e2e_ms in await asyncio.gather(*tasks):
            results["CreateOrder"].append(rpc_ms)
            results["create -> FILLED"].append(e2e_ms)
        for seq in range(probes):
            await asyncio.sleep(idle_s)
            _, e2e_ms = await place(n + seq)
            results["after idle: create -> FILLED"].append(e2e_ms)
        reader.cancel()
        return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("-n", "--n", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--probes", type=int, default=5)
    parser.add_argument("--idle-s", type=float, default=1.5)
    args = parser.parse_args()
    series: dict[str, list[list[float]]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-logs-") as logs,
        local_stack(
            REDIS, NATS, redis_db=BENCH_DB, log_dir=Path(logs), simulator_args=SIM_ARGS, extra_env=SERVICE_ENV
        ) as stack,
    ):
        asyncio.run(one_run(stack.grpc_target, 20, args.rate, 0, 0))  # warm-up: connections, caches
        for run in range(1, args.runs + 1):
            print(
                f"run {run}/{args.runs}: {args.n} orders at {args.rate:.0f}/s, {args.probes} idle probes",
                flush=True,
            )
            for label, samples in asyncio.run(
                one_run(stack.grpc_target, args.n, args.rate, args.probes, args.idle_s)
            ).items():
                series.setdefault(label, []).append(samples)
    report(
        "order_latency",
        "Order latency, gRPC client to FILLED update (simulator exchange)",
        series,
        baseline="GetOrder (baseline)",
        notes={
            "rate_per_s": args.rate,
            "idle_s": args.idle_s,
            "processes": "simulator, 1 worker (4 threads), gateway",
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
