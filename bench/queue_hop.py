"""Queue hop: enqueue -> actor start, the doorbell consumer against Dramatiq's stock one.

Both run on the real Redis (db 12) with one in-process Dramatiq worker and the same
number of per-symbol queues. Per run: `--n` messages paced at `--rate`/s, then
`--probes` single messages each after `--idle-s` of silence (the case where the stock
consumer is deep in its backoff sleep). Baseline: a bare Redis RPUSH/BLPOP hand-off
between two threads, measured in the same run.

Usage: python bench/queue_hop.py [--runs 3] [--n 400] [--rate 200] [--probes 5] [--idle-s 1.5]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

import dramatiq
import redis
from dramatiq import Worker
from dramatiq.brokers.redis import RedisBroker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import report
from tasks.broker import build_broker

REDIS_URL = "redis://127.0.0.1:6379/12"
QUEUES = [f"orders.SYM{i}" for i in range(8)]


def measure(
    broker: dramatiq.Broker, n: int, rate: float, probes: int, idle_s: float
) -> tuple[list[float], list[float]]:
    starts: dict[int, float] = {}
    done = threading.Event()
    expected = n + probes

    def probe(seq: int) -> None:
        starts[seq] = time.perf_counter()
        if len(starts) >= expected:
            done.set()

    actor: Any = dramatiq.actor(actor_name="probe", broker=broker, queue_name=QUEUES[0])(probe)
    for queue in QUEUES:
        broker.declare_queue(queue)
    worker = Worker(broker, worker_threads=2)
    worker.start()
    time.sleep(1.0)  # let consumers settle into their idle state
    sent: dict[int, float] = {}
    message = actor.message
    try:
        for seq in range(n):
            target = time.perf_counter() + 1 / rate
            msg = message(seq).copy(queue_name=QUEUES[0])
            sent[seq] = time.perf_counter()
            broker.enqueue(msg)
            time.sleep(max(0.0, target - time.perf_counter()))
        for seq in range(n, n + probes):
            time.sleep(idle_s)
            sent[seq] = time.perf_counter()
            broker.enqueue(message(seq).copy(queue_name=QUEUES[0]))
        done.wait(timeout=30)
    finally:
        worker.stop()
        broker.close()
    steady = [(starts[s] - sent[s]) * 1000 for s in range(n) if s in starts]
    idle = [(starts[s] - sent[s]) * 1000 for s in range(n, n + probes) if s in starts]
    return steady, idle


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

    thread = threading.Thread(target=consumer)
    thread.start()
    ready.wait()
    for _ in range(n):
        client.rpush("bench:raw", repr(time.perf_counter()))
        time.sleep(0.002)
    thread.join()
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
    series: dict[str, list[list[float]]] = {
        k: []
        for k in (
            "raw RPUSH->BLPOP (baseline)",
            "doorbell steady",
            "doorbell after idle",
            "stock steady",
            "stock after idle",
        )
    }
    for run in range(1, args.runs + 1):
        print(f"run {run}/{args.runs}: raw baseline, doorbell consumer, stock consumer...", flush=True)
        redis.Redis.from_url(REDIS_URL).flushdb()
        series["raw RPUSH->BLPOP (baseline)"].append(raw_blpop(args.n))
        steady, idle = measure(build_broker(REDIS_URL), args.n, args.rate, args.probes, args.idle_s)
        series["doorbell steady"].append(steady)
        series["doorbell after idle"].append(idle)
        redis.Redis.from_url(REDIS_URL).flushdb()
        stock = RedisBroker(url=REDIS_URL, middleware=[])
        steady, idle = measure(stock, args.n, args.rate, args.probes, args.idle_s)
        series["stock steady"].append(steady)
        series["stock after idle"].append(idle)
    redis.Redis.from_url(REDIS_URL).flushdb()
    report(
        "queue_hop",
        f"Dramatiq queue hop, {len(QUEUES)} queues, enqueue -> actor start",
        series,
        baseline="raw RPUSH->BLPOP (baseline)",
        notes={
            "rate_per_s": args.rate,
            "idle_s": args.idle_s,
            "worker_threads": 2,
            "dramatiq_worker_timeout_ms": 1000,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
