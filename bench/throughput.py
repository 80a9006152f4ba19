"""Throughput, latency under load and CPU cost of the whole order path, over 20 symbols.

Starts the stack in load-test mode (launcher/stack.py, launcher/load_test.py): simulator with frozen
prices, the worker processes `up` would start (one per core), one listener and the gateway,
each its own process, on the machine's Redis (db 1, see BENCH_DB) and NATS. The client keeps
one gRPC channel; one StreamOrderUpdates reader (every symbol) stamps, per order, the arrival
of the first update that carries the exchange's answer (any state beyond NEW/SUBMITTING) and
of the final one. Orders are MARKET, BUY/SELL alternating
per symbol, each the smallest quantity that meets the symbol's MIN_NOTIONAL at the simulator's
price (x1.1), sent open-loop: send times come from a schedule fixed at the step's start, and no
order waits for another.

Per run (`--runs`, default 3; tables show the median over runs of each run's p50 and p99):
  1. rate sweep (50 ... 1600 orders/s, `--step-s` each, then a drain): CreateOrder ack,
     submit -> stream update (the exchange's answer), submit -> final state. Stops once a
     step's p99 exceeds 1 s or an order is refused or unanswered (lost: no answer in 10 s).
     Knee = highest rate whose median p99 (submit -> stream update) is <= 50 ms, with none lost.
  2. CPU per order and % of a core for every process (descendants included; utime+stime from
     /proc), Redis, NATS and this client during each sweep step, plus "rest of machine" (all
     CPUs' busy time minus those: anything else running disturbs the numbers and shows here).
  3. burst: 300 CreateOrder calls started together; first submit -> last answer on the stream.
  4. idle CPU: 10 s without orders (the 20 symbol queues still consumed).
  5. after idle: 5 single orders, each after 5 s of silence.
  6. baselines, same run, same simulator (a second account, so the service's listener does not
     see them): signed httpx POST /fapi/v1/order (keep-alive; the floor of the exchange hop) and
     ccxt binanceusdm create_order (async), 200 orders each, one at a time.

Writes bench/results/throughput.json and throughput_latency.png, throughput_distribution.png,
throughput_cpu.png. Bounded: 3-6 minutes on 2 cores (`--quick`: 1 run, 3 rates, 2 s steps, ~1 min).

Usage: python bench/throughput.py [--runs 3] [--step-s 3] [--rates 50,100,...] [--symbols A,B]
       [--quick] [--redis-db 1] [--log-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.exchange_baselines import Account
from bench.load_phases import run_load
from bench.load_session import LOST_AFTER_S
from bench.redis_db import BENCH_REDIS_DB
from bench.throughput_report import plot, print_tables, write_results
from bench.throughput_summary import KNEE_P99_MS, summarize
from order_execution.launcher.processes import worker_processes
from order_execution.launcher.stack import local_stack

REDIS = "127.0.0.1:6379"
NATS = "nats://127.0.0.1:4222"
# The benches' own db: local_stack flushes its db, so sharing one with a concurrent test run would
# break both (see bench/redis_db.py).
BENCH_DB = BENCH_REDIS_DB
SYMBOLS = [
    f"{base}USDT"
    for base in (
        *("BTC", "ETH", "BNB", "SOL", "XRP", "DOGE", "ADA", "AVAX", "LINK", "DOT"),
        *("LTC", "BCH", "TRX", "NEAR", "APT", "ARB", "OP", "FIL", "ATOM", "ETC"),
    )
]
RATES = (50, 100, 200, 400, 600, 800, 1000, 1200, 1600)
QUICK_RATES = (50, 200, 400)
# The exchange stand-in shares the two cores with the service, so it runs in its cheaper reference-price
# matching (about 0.2 ms less CPU per order than its order book); the service does the same work either way.
SIM_ARGS = ("--walk-interval-ms", "0", "--matching", "reference")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--step-s", type=float, default=3.0, help="seconds per sweep step (default 3)")
    parser.add_argument("--rates", help=f"comma-separated orders/s (default {','.join(map(str, RATES))})")
    parser.add_argument("--symbols", help="comma-separated symbols (default: the 20 of the bench)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 run, rates 50,200,400, 2 s steps")
    parser.add_argument("--redis-db", type=int, default=BENCH_DB, help=f"Redis db (default {BENCH_DB})")
    parser.add_argument(
        "--log-dir", type=Path, help="keep the stack's process logs here (default: a temp dir)"
    )
    args = parser.parse_args()
    if args.quick:
        args.runs, args.step_s = 1, 2.0
    rates = args.rates or ",".join(map(str, QUICK_RATES if args.quick else RATES))
    args.rates = sorted({int(r) for r in rates.split(",") if r})
    args.symbols = (
        [s.strip().upper() for s in args.symbols.split(",") if s.strip()] if args.symbols else SYMBOLS
    )
    return args


def main() -> int:
    args = parse_args()
    symbols: list[str] = args.symbols
    started = time.perf_counter()
    baseline_account = Account()
    sim_args = (*SIM_ARGS, "--account", f"{baseline_account.key}:{baseline_account.secret}")
    print(
        f"throughput bench: {len(symbols)} symbols, rates {args.rates}, "
        f"{args.step_s:g} s steps, {args.runs} run(s)",
        flush=True,
    )
    with (
        tempfile.TemporaryDirectory(prefix="bench-logs-") as logs,
        local_stack(
            REDIS,
            NATS,
            redis_db=args.redis_db,
            log_dir=args.log_dir or Path(logs),
            symbols=symbols,
            rate_limits=False,
            simulator_args=sim_args,
            workers=worker_processes(0),  # as `up` runs them: one per core
        ) as stack,
    ):
        print(f"stack up in {time.perf_counter() - started:.1f} s: {', '.join(stack.processes)}", flush=True)
        runs = asyncio.run(
            run_load(stack, REDIS, symbols, baseline_account, args.runs, args.rates, args.step_s)
        )
        processes = {name: " ".join(p.command[1:]) for name, p in stack.processes.items()}
    summary = summarize(runs)
    table = print_tables(summary, symbols)
    paths = plot(summary, runs)
    notes = {
        "symbols": symbols,
        "rates": args.rates,
        "step_s": args.step_s,
        "redis_db": args.redis_db,
        "runs": args.runs,
        "load_test_mode": "local_stack(rate_limits=False)",
        "processes": processes,
        "knee_rule": f"highest rate with median p99 submit->stream update <= {KNEE_P99_MS} ms, none lost",
        "lost_after_s": LOST_AFTER_S,
        "cpu": "utime+stime from /proc incl. descendants; redis/nats are shared machine services",
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    path = write_results(summary, runs, table, notes)
    print(
        f"\nwrote {path} and {', '.join(p.name for p in paths)} "
        f"({time.perf_counter() - started:.0f} s in all)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
