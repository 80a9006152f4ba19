"""Throughput, latency under load and CPU cost of the whole order path, over 20 symbols.

Starts the stack in load-test mode (launcher/stack.py, launcher/load_test.py) with auth on, as
`up` runs it: simulator with frozen prices, the worker processes `up` would start (one per
core), one listener and the gateway, each its own process, on the machine's Redis (db 1, see
BENCH_DB) and NATS. The client keeps one gRPC channel and sends its API key (x-api-key) on
every call; one StreamOrderUpdates reader (every symbol) stamps, per order, the arrival of the
first update that carries the exchange's answer (any state beyond NEW/SUBMITTING) and of the
final one. Orders are MARKET, BUY/SELL alternating per symbol, each the smallest quantity that
meets the symbol's MIN_NOTIONAL at the simulator's price (x1.1), sent open-loop: send times come
from a schedule fixed at the step's start, and no order waits for another.

How it measures (so that no figure looks better than what a client would see):
  * every latency runs from the order's SCHEDULED send time, not from when the call went out;
    the client's lag (actual send - scheduled send) is reported beside it, p50 and p99 per step,
    and a step whose lag p99 passes 20 ms (or that sent under 90 % of its rate) is flagged
    "behind schedule";
  * nothing is dropped from a percentile: an order timed out, unanswered or refused counts as
    the timeout (10 s);
  * each step lasts `--step-s` (default 10 s) and its first `--warmup-s` (default 1 s) is
    warm-up: those orders are sent, and count if lost or refused, but their latencies and the CPU
    spent while they went out are not measured; CPU per order is taken over the steady part;
  * the knee is the highest rate up to which every step has median p99 submit -> update <= 50 ms,
    no order lost or refused, and the client on schedule in every run.

Per run (`--runs`, default 3; tables show the median over runs of each run's p50 and p99):
  1. rate sweep (50 ... 1600 orders/s): CreateOrder ack, submit -> stream update (the
     exchange's answer), submit -> final state, -> trades recorded. Stops once a step's p99
     exceeds 1 s or an order is refused or unanswered (lost: no answer within 10 s of its
     scheduled send).
  2. CPU per order and % of a core for every process (descendants included; utime+stime from
     /proc), Redis, NATS and this client during each sweep step, plus "rest of machine" (all
     CPUs' busy time minus those: anything else running disturbs the numbers and shows here).
  3. burst: 300 CreateOrder calls started together; first submit -> last answer on the stream.
  4. idle CPU per process: 10 s without orders (the 20 symbol queues still consumed).
  5. after idle: 5 single orders, each after 5 s of silence.
  6. baselines, same run, same simulator (a second account, so the service's listener does not
     see them): signed httpx POST /fapi/v1/order (keep-alive; the floor of the exchange hop) and
     ccxt binanceusdm create_order (async), 200 orders each, one at a time.
  7. the transport floor (bench/transport_floor.py) at 200 and 600 orders/s.
Then the headline lines, each a ratio or difference within one run, median over runs:
  service CPU per order at 200/s = <x> x transport floor
  submit -> update p50 at 50/s = ccxt + <y> ms
  whole machine CPU per order at 50/s = <z> x that at 200/s

Writes bench/results/throughput.json (with the machine's description: CPU model, cores, Python,
kernel, date, git commit) and throughput_latency.png, throughput_distribution.png,
throughput_cpu.png; `--publish` copies them to docs/performance/, where the README's figures come
from. `--render-readme FILE` prints the README's tables (Markdown) from a results file and exits.
Bounded: about 3 minutes per run on 2 cores (`--quick`: 1 run, 3 rates, 3 s steps).

Usage: python bench/throughput.py [--runs 3] [--step-s 10] [--warmup-s 1] [--rates 50,100,...]
       [--symbols A,B] [--quick] [--redis-db 1] [--log-dir DIR] [--publish]
       python bench/throughput.py --publish-only
       python bench/throughput.py --render-readme docs/performance/throughput.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.exchange_baselines import Account
from bench.load_phases import CLIENT_LAG_MS, STEP_S, WARMUP_S, run_load
from bench.load_session import LOST_AFTER_S
from bench.redis_db import BENCH_REDIS_DB
from bench.throughput_markdown import render_markdown
from bench.throughput_report import plot, print_tables, publish, write_results
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
RATES = (50, 100, 200, 300, 400, 600, 800, 1000, 1200, 1600)
QUICK_RATES = (50, 200, 400)
QUICK_STEP_S = 3.0
# The exchange stand-in shares the two cores with the service, so it runs in its cheaper reference-price
# matching (about 0.2 ms less CPU per order than its order book); the service does the same work either way.
SIM_ARGS = ("--walk-interval-ms", "0", "--matching", "reference")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--step-s", type=float, default=STEP_S, help=f"seconds per sweep step (default {STEP_S:g})"
    )
    parser.add_argument(
        "--warmup-s",
        type=float,
        default=WARMUP_S,
        help=f"first seconds of each step sent but not measured (default {WARMUP_S:g})",
    )
    parser.add_argument("--rates", help=f"comma-separated orders/s (default {','.join(map(str, RATES))})")
    parser.add_argument("--symbols", help="comma-separated symbols (default: the 20 of the bench)")
    parser.add_argument(
        "--quick", action="store_true", help=f"smoke test: 1 run, rates 50,200,400, {QUICK_STEP_S:g} s steps"
    )
    parser.add_argument("--redis-db", type=int, default=BENCH_DB, help=f"Redis db (default {BENCH_DB})")
    parser.add_argument(
        "--log-dir", type=Path, help="keep the stack's process logs here (default: a temp dir)"
    )
    parser.add_argument(
        "--publish", action="store_true", help="after the run, copy its JSON and PNGs to docs/performance/"
    )
    parser.add_argument(
        "--publish-only",
        action="store_true",
        help="copy the last run's JSON and PNGs from bench/results/ to docs/performance/ and exit",
    )
    parser.add_argument(
        "--render-readme",
        type=Path,
        metavar="RESULTS_JSON",
        help="print the README's tables (Markdown) from a results file and exit",
    )
    args = parser.parse_args()
    if args.quick:
        args.runs, args.step_s = 1, QUICK_STEP_S
    if args.warmup_s < 0 or args.step_s <= args.warmup_s:
        parser.error("--step-s must be longer than --warmup-s (and --warmup-s not negative)")
    rates = args.rates or ",".join(map(str, QUICK_RATES if args.quick else RATES))
    args.rates = sorted({int(r) for r in rates.split(",") if r})
    args.symbols = (
        [s.strip().upper() for s in args.symbols.split(",") if s.strip()] if args.symbols else SYMBOLS
    )
    return args


def render_readme(path: Path) -> int:
    """Print the README's throughput tables from the results file at `path`."""
    print(render_markdown(json.loads(path.read_text()), str(path)), end="")
    return 0


def main() -> int:
    args = parse_args()
    if args.render_readme:
        return render_readme(args.render_readme)
    if args.publish_only:
        print("copied " + ", ".join(str(p) for p in publish()))
        return 0
    symbols: list[str] = args.symbols
    started = time.perf_counter()
    baseline_account = Account()
    sim_args = (*SIM_ARGS, "--account", f"{baseline_account.key}:{baseline_account.secret}")
    print(
        f"throughput bench: {len(symbols)} symbols, rates {args.rates}, {args.step_s:g} s steps "
        f"(first {args.warmup_s:g} s warm-up), {args.runs} run(s), auth on",
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
            auth=True,  # as `up` runs: every call carries the API key and the gateway checks it
            simulator_args=sim_args,
            workers=worker_processes(0),  # as `up` runs them: one per core
        ) as stack,
    ):
        print(f"stack up in {time.perf_counter() - started:.1f} s: {', '.join(stack.processes)}", flush=True)
        runs = asyncio.run(
            run_load(
                stack, REDIS, symbols, baseline_account, args.runs, args.rates, args.step_s, args.warmup_s
            )
        )
        processes = {name: " ".join(p.command[1:]) for name, p in stack.processes.items()}
    summary = summarize(runs)
    table = print_tables(summary, symbols)
    paths = plot(summary, runs)
    notes = {
        "symbols": symbols,
        "rates": args.rates,
        "step_s": args.step_s,
        "warmup_s": args.warmup_s,
        "redis_db": args.redis_db,
        "runs": args.runs,
        "auth": True,
        "load_test_mode": "local_stack(rate_limits=False, auth=True)",
        "processes": processes,
        "latency_origin": "each order's scheduled send time (open loop); lag = actual send - scheduled",
        "timeouts": f"an order timed out, unanswered or refused counts as {LOST_AFTER_S * 1000:.0f} ms",
        "warmup": f"the first {args.warmup_s:g} s of each step is sent, its latencies and CPU not measured",
        "knee_rule": (
            f"highest rate up to which every step has median p99 submit->stream update <= {KNEE_P99_MS} ms, "
            f"none lost or refused, client lag p99 <= {CLIENT_LAG_MS} ms in every run"
        ),
        "lost_after_s": LOST_AFTER_S,
        "cpu": "utime+stime from /proc incl. descendants, over each step's steady part; "
        "redis/nats are shared machine services; idle CPU per process",
        "headline": "each figure a ratio or difference within one run, then the median over runs",
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    path = write_results(summary, runs, table, notes)
    print(
        f"\nwrote {path} and {', '.join(p.name for p in paths)} "
        f"({time.perf_counter() - started:.0f} s in all)"
    )
    if args.publish:
        print("copied " + ", ".join(str(p) for p in publish()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
