"""Queue hop: enqueue -> handler start, our asyncio consumer against Dramatiq's stock Worker.

Both consume the same 8 per-symbol queues on the real Redis (the benches' db, flushed; see
bench/redis_db.py), in this process, and get their messages the same way: enqueued as the
gateway does, by the order store's script (`OrderStore.enqueue(submit_order_push(order))`),
which writes Dramatiq's layout and rings the queue's doorbell. Only the consumer differs:

  consumer  workers.consumer.Consumer on its own uvloop thread, configured as a worker
            process is (sweep every 1 s, max_in_flight 64); idle, it blocks on the
            doorbells.
  stock     dramatiq.Worker (2 threads) over Dramatiq's stock RedisBroker consumer
            (tasks.broker.build_broker); idle, it polls each queue with a growing sleep
            of up to worker_timeout (1 s).

Per run and consumer: `--n` messages paced at `--rate`/s, round-robin over the queues
("steady"), then `--probes` single messages each after `--idle-s` of silence ("after
idle"). Baseline: a bare Redis RPUSH/BLPOP hand-off between two threads, same run.
About 25 s per run (3 runs by default).

Usage: python bench/queue_hop.py [--runs 3] [--n 400] [--rate 200] [--probes 5] [--idle-s 1.5]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import dramatiq
import redis
import redis.asyncio as aioredis
import uvloop
from dramatiq import Worker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.redis_db import BENCH_REDIS_DB
from bench.report import report
from order_execution.orders.model import Order, OrderType, Side
from order_execution.orders.store import OrderStore
from order_execution.tasks.broker import build_broker
from order_execution.tasks.messages import submit_order_push
from order_execution.tasks.queues import SUBMIT_ORDER, queue_for
from order_execution.workers.consumer import Consumer, Handler

REDIS_URL = f"redis://127.0.0.1:6379/{BENCH_REDIS_DB}"  # flushed before and after each run
SYMBOLS = [f"HOP{i}USDT" for i in range(8)]
QUEUES = [queue_for(symbol) for symbol in SYMBOLS]
CONSUMER_SWEEP_S = 1.0  # as workers/process.py
CONSUMER_MAX_IN_FLIGHT = 64  # worker.max_in_flight's default
STOCK_THREADS = 2
SETTLE_S = 1.0  # before the first message: let the consumer reach its idle state
WAIT_S = 10.0  # longest wait for the last message to be handled


def market_buy(order_id: str, symbol: str) -> Order:
    return Order(order_id, order_id, symbol, Side.BUY, OrderType.MARKET, Decimal("0.01"), None, None)


class Starts:
    """Handler start times by order id; `done` once `expected` have started."""

    def __init__(self, expected: int) -> None:
        self.at: dict[str, float] = {}
        self.expected = expected
        self.done = threading.Event()

    def record(self, order_id: str) -> None:
        self.at[order_id] = time.perf_counter()
        if len(self.at) >= self.expected:
            self.done.set()


async def produce(
    n: int, rate: float, probes: int, idle_s: float
) -> tuple[list[str], list[str], dict[str, float]]:
    """Enqueue as the gateway does; returns the steady and probe order ids and their send times."""
    client = aioredis.Redis.from_url(REDIS_URL)
    store = OrderStore(client)
    sent: dict[str, float] = {}

    async def send(order_id: str, symbol: str) -> None:
        push = submit_order_push(market_buy(order_id, symbol))
        sent[order_id] = time.perf_counter()
        await store.enqueue(push)

    steady = [f"s{seq}" for seq in range(n)]
    idle = [f"p{seq}" for seq in range(probes)]
    try:
        await store.enqueue(submit_order_push(market_buy("warm-up", SYMBOLS[0])))  # loads the script
        for seq, order_id in enumerate(steady):
            target = time.perf_counter() + 1 / rate
            await send(order_id, SYMBOLS[seq % len(SYMBOLS)])
            await asyncio.sleep(max(0.0, target - time.perf_counter()))
        for seq, order_id in enumerate(idle):
            await asyncio.sleep(idle_s)
            await send(order_id, SYMBOLS[seq % len(SYMBOLS)])
    finally:
        await client.aclose()
    return steady, idle, sent


@contextmanager
def our_consumer(starts: Starts) -> Iterator[None]:
    """workers.consumer.Consumer on its own uvloop thread, stopped (and joined) on exit."""
    ready = threading.Event()
    handle: dict[str, Any] = {}

    async def submit(order_id: str, queued: str) -> None:
        starts.record(order_id)

    async def serve() -> None:
        client = aioredis.Redis.from_url(REDIS_URL)
        stop = asyncio.Event()
        handle["loop"], handle["stop"] = asyncio.get_running_loop(), stop
        consumer = Consumer(
            client,
            QUEUES,
            {SUBMIT_ORDER: Handler(run=submit)},
            max_in_flight=CONSUMER_MAX_IN_FLIGHT,
            sweep_interval_s=CONSUMER_SWEEP_S,
        )
        ready.set()
        try:
            await consumer.run(stop, grace_s=1.0)
        finally:
            await client.aclose()

    thread = threading.Thread(target=uvloop.run, args=(serve(),), name="queue-hop-consumer", daemon=True)
    thread.start()
    if not ready.wait(timeout=WAIT_S):
        raise RuntimeError("the consumer thread did not start")
    try:
        yield
    finally:
        handle["loop"].call_soon_threadsafe(handle["stop"].set)
        thread.join(timeout=WAIT_S)


@contextmanager
def stock_worker(starts: Starts) -> Iterator[None]:
    """Dramatiq's Worker over its stock RedisBroker consumer, stopped and closed on exit."""
    broker = build_broker(REDIS_URL)

    def submit(order_id: str, queued: str) -> None:
        starts.record(order_id)

    dramatiq.actor(actor_name=SUBMIT_ORDER, broker=broker, queue_name=QUEUES[0])(submit)
    for queue in QUEUES:
        broker.declare_queue(queue)
    worker = Worker(broker, worker_threads=STOCK_THREADS)
    worker.start()
    try:
        yield
    finally:
        worker.stop()
        broker.close()


def measure(
    consumer: Callable[[Starts], Any], n: int, rate: float, probes: int, idle_s: float
) -> tuple[list[float], list[float]]:
    """(steady, after idle) hops in ms through `consumer` (a context manager factory)."""
    redis.Redis.from_url(REDIS_URL).flushdb()
    starts = Starts(expected=n + probes + 1)  # + the warm-up message that loads the script
    with consumer(starts):
        time.sleep(SETTLE_S)
        steady, idle, sent = asyncio.run(produce(n, rate, probes, idle_s))
        starts.done.wait(timeout=WAIT_S)
    redis.Redis.from_url(REDIS_URL).flushdb()

    def hops(order_ids: list[str]) -> list[float]:
        return [(starts.at[i] - sent[i]) * 1000 for i in order_ids if i in starts.at]

    return hops(steady), hops(idle)


def raw_blpop(n: int) -> list[float]:
    client = redis.Redis.from_url(REDIS_URL)
    client.delete("bench:raw")
    got: list[float] = []
    ready = threading.Event()

    def consumer() -> None:
        c = redis.Redis.from_url(REDIS_URL)
        ready.set()
        for _ in range(n):
            _, sent = c.blpop(["bench:raw"])  # type: ignore[misc]
            got.append((time.perf_counter() - float(sent)) * 1000)
        c.close()

    thread = threading.Thread(target=consumer)
    thread.start()
    ready.wait()
    for _ in range(n):
        client.rpush("bench:raw", repr(time.perf_counter()))
        time.sleep(0.002)
    thread.join()
    client.delete("bench:raw")
    client.close()
    return got


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("-n", "--n", type=int, default=400)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--probes", type=int, default=5)
    parser.add_argument("--idle-s", type=float, default=1.5)
    args = parser.parse_args()
    consumers: dict[str, Callable[[Starts], Any]] = {"consumer": our_consumer, "stock": stock_worker}
    series: dict[str, list[list[float]]] = {"raw RPUSH->BLPOP (baseline)": []}
    for name in consumers:
        series[f"{name} steady"] = []
        series[f"{name} after idle"] = []
    for run in range(1, args.runs + 1):
        print(f"run {run}/{args.runs}: raw baseline, our consumer, Dramatiq's stock worker...", flush=True)
        series["raw RPUSH->BLPOP (baseline)"].append(raw_blpop(args.n))
        for name, consumer in consumers.items():
            steady, idle = measure(consumer, args.n, args.rate, args.probes, args.idle_s)
            missing = args.n + args.probes - len(steady) - len(idle)
            if missing:
                print(f"  {name}: {missing} messages not handled within {WAIT_S:.0f} s", flush=True)
            series[f"{name} steady"].append(steady)
            series[f"{name} after idle"].append(idle)
    report(
        "queue_hop",
        f"Queue hop, {len(QUEUES)} queues, gateway enqueue -> handler start",
        series,
        baseline="raw RPUSH->BLPOP (baseline)",
        notes={
            "rate_per_s": args.rate,
            "idle_s": args.idle_s,
            "queues": len(QUEUES),
            "consumer_sweep_interval_s": CONSUMER_SWEEP_S,
            "consumer_max_in_flight": CONSUMER_MAX_IN_FLIGHT,
            "stock_worker_threads": STOCK_THREADS,
            "stock_worker_timeout_ms": 1000,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
