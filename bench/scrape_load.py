"""CreateOrder latency with and without 200 /metrics scrapes per second, in the same run.

Starts the stack as the throughput bench does (launcher/stack.py in load-test mode: simulator,
one worker per core, a listener and the gateway, each its own process, on the machine's
Redis, db 1, and NATS), with the gateway's metrics settings at their defaults. Per run
(`--runs`, default 3) two phases of `--phase-s` seconds (default 10): MARKET CreateOrders
sent open-loop at `--rate` per second (default 100) over two symbols, once alone and once
while a separate scraper process GETs the gateway's /metrics `--scrapes` times per second
(default 200), also open-loop. The phases alternate which comes first from run to run, so a
drift of the machine is not read as the scrapes' cost.

The table (bench/report.py) shows per series the median over runs of each run's median and
p99 CreateOrder ack (request to reply), and the ratio to the no-scrape series of the same
invocation; also the scrapes' own latency. Writes bench/results/scrape_load.json and
scrape_load.png.

Usage: python bench/scrape_load.py [--runs 3] [--phase-s 10] [--rate 100] [--scrapes 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc

from bench.load_phases import warm_up
from bench.load_session import Order, Session, latencies, order_quantities, print_lost, wait_until
from bench.redis_db import BENCH_REDIS_DB
from bench.report import fmt, percentile, report
from bench.throughput import NATS, REDIS, SIM_ARGS
from order_execution.launcher.processes import worker_processes
from order_execution.launcher.stack import LocalStack, local_stack
from order_execution.proto import order_pb2_grpc

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
BASELINE = "CreateOrder, no scrapes"
SCRAPED = "CreateOrder, {n} scrapes/s"
SCRAPES = "the /metrics scrapes themselves"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--phase-s", type=float, default=10.0, help="seconds per phase (default 10)")
    parser.add_argument("--rate", type=int, default=100, help="CreateOrders per second (default 100)")
    parser.add_argument("--scrapes", type=int, default=200, help="/metrics GETs per second (default 200)")
    parser.add_argument("--scrape-only", help=argparse.SUPPRESS)  # the scraper process: its URL
    return parser.parse_args()


# ---------------------------------------------------------------- the scraper process


async def scrape(url: str, per_s: int, seconds: float) -> dict[str, Any]:
    """GET `url` `per_s` times a second for `seconds`, open-loop; latencies (ms), errors, bytes."""
    import aiohttp

    took: list[float] = []
    errors = 0
    size = 0

    async def one(http: aiohttp.ClientSession) -> None:
        nonlocal errors, size
        started = time.perf_counter()
        try:
            async with http.get(url) as response:
                body = await response.read()
                if response.status != 200:
                    errors += 1
                    return
                size = len(body)
        except aiohttp.ClientError:
            errors += 1
            return
        took.append((time.perf_counter() - started) * 1000)

    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as http:
        began = time.perf_counter()
        tasks = []
        for i in range(int(per_s * seconds)):
            delay = began + i / per_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(http)))
        await asyncio.gather(*tasks)
    return {"latencies_ms": took, "errors": errors, "bytes": size, "sent": len(tasks)}


def start_scraper(url: str, per_s: int, seconds: float) -> subprocess.Popen[str]:
    """This script as a separate scraper process, so its CPU is not the order client's."""
    command = [
        sys.executable,
        __file__,
        "--scrape-only",
        url,
        "--scrapes",
        str(per_s),
        "--phase-s",
        str(seconds),
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


# ---------------------------------------------------------------- the order client


async def send_orders(session: Session, rate: int, seconds: float) -> list[Order]:
    """`rate` MARKET CreateOrders a second for `seconds`, open-loop (latencies from each order's
    scheduled send time); then until every one settled."""
    orders = session.plan(int(rate * seconds))
    began = time.perf_counter()
    tasks = []
    for i, order in enumerate(orders):
        order.scheduled = began + i / rate
        await wait_until(order.scheduled)
        tasks.append(asyncio.create_task(session.place(order)))
    await asyncio.gather(*tasks)
    await session.drain(orders)
    return orders


async def run_phases(stack: LocalStack, args: argparse.Namespace) -> dict[str, Any]:
    quantities, _ = order_quantities(stack.exchange_base, SYMBOLS)
    scraped_label = SCRAPED.format(n=args.scrapes)
    acks: dict[str, list[list[float]]] = {BASELINE: [], scraped_label: []}
    scrapes: list[list[float]] = []
    scrape_notes: list[dict[str, Any]] = []
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        session = Session(order_pb2_grpc.OrderServiceStub(channel), SYMBOLS, quantities)
        reader = asyncio.create_task(session.read_stream())
        await asyncio.sleep(0.5)
        await warm_up(session)
        try:
            for run in range(1, args.runs + 1):
                phases = [False, True] if run % 2 else [True, False]
                for scraping in phases:
                    await session.settle()
                    scraper = None
                    if scraping:
                        scraper = start_scraper(f"{stack.http_base}/metrics", args.scrapes, args.phase_s)
                        await asyncio.sleep(0.3)  # the scraper's interpreter starts before the orders do
                    orders = await send_orders(session, args.rate, args.phase_s)
                    label = scraped_label if scraping else BASELINE
                    print_lost(label, orders)
                    samples = latencies(orders)["ack"]
                    acks[label].append(samples)
                    line = (
                        f"run {run}: {label}: {len(samples)} acks, p50 {fmt(percentile(samples, 50), 2)} ms, "
                        f"p99 {fmt(percentile(samples, 99), 2)} ms"
                    )
                    if scraper is not None:
                        out, _ = await asyncio.to_thread(scraper.communicate)
                        result = json.loads(out)
                        scrapes.append(result.pop("latencies_ms"))
                        scrape_notes.append(result)
                        line += (
                            f"; {len(scrapes[-1])}/{result['sent']} scrapes ok, {result['errors']} failed, "
                            f"p99 {fmt(percentile(scrapes[-1], 99), 2)} ms, {result['bytes']} bytes each"
                        )
                    print(line, flush=True)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
    return {"acks": acks, "scrapes": scrapes, "scrape_notes": scrape_notes}


def main() -> int:
    args = parse_args()
    if args.scrape_only:
        print(json.dumps(asyncio.run(scrape(args.scrape_only, args.scrapes, args.phase_s))))
        return 0
    started = time.perf_counter()
    print(
        f"scrape-load bench: {args.runs} runs x 2 phases x {args.phase_s:g} s, {args.rate} orders/s, "
        f"{args.scrapes} scrapes/s in one phase",
        flush=True,
    )
    with (
        tempfile.TemporaryDirectory(prefix="bench-logs-") as logs,
        local_stack(
            REDIS,
            NATS,
            redis_db=BENCH_REDIS_DB,
            log_dir=Path(logs),
            symbols=SYMBOLS,
            rate_limits=False,
            simulator_args=SIM_ARGS,
            workers=worker_processes(0),
        ) as stack,
    ):
        print(f"stack up in {time.perf_counter() - started:.1f} s", flush=True)
        measured = asyncio.run(run_phases(stack, args))
    series = {**measured["acks"], SCRAPES: measured["scrapes"]}
    report(
        "scrape_load",
        f"CreateOrder ack at {args.rate}/s, alone and with {args.scrapes} gateway /metrics scrapes/s (ms)",
        series,
        BASELINE,
        notes={
            "rate_per_s": args.rate,
            "scrapes_per_s": args.scrapes,
            "phase_s": args.phase_s,
            "symbols": SYMBOLS,
            "gateway_metrics_settings": "defaults (monitoring.cluster_gauges_refresh_ms, metrics_render_ms)",
            "scrapes": measured["scrape_notes"],
            "elapsed_s": round(time.perf_counter() - started, 1),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
