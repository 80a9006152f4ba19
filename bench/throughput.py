"""Throughput, latency under load and CPU cost of the whole order path, over 20 symbols.

Starts the stack in load-test mode (cli/stack.py, cli/load_test.py): simulator with frozen
prices, the worker processes `up` would start (one per core), one listener and the gateway,
each its own process, on the machine's Redis (db 15, see BENCH_DB) and NATS. The client keeps
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
       [--quick] [--redis-db 15] [--log-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import math
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import RESULTS, machine, percentile, write_json
from cli.processes import worker_processes
from cli.stack import LocalStack, local_stack
from exchange.signing import signed_query
from proto import order_pb2 as pb
from proto import order_pb2_grpc

NAME = "throughput"
REDIS = "127.0.0.1:6379"
NATS = "nats://127.0.0.1:4222"
# Not 11 (order_latency.py, tests/integration/test_outages.py) nor 9/10/12/13/14 (other tests and
# benches): local_stack flushes its db, so sharing one with a concurrent run breaks both.
BENCH_DB = 15
SYMBOLS = [
    f"{base}USDT"
    for base in (
        *("BTC", "ETH", "BNB", "SOL", "XRP", "DOGE", "ADA", "AVAX", "LINK", "DOT"),
        *("LTC", "BCH", "TRX", "NEAR", "APT", "ARB", "OP", "FIL", "ATOM", "ETC"),
    )
]
RATES = (50, 100, 200, 400, 600, 800, 1000, 1200, 1600)
QUICK_RATES = (50, 200, 400)
KNEE_P99_MS = 50.0
STOP_P99_MS = 1000.0
LOST_AFTER_S = 10.0
DRAIN_TAIL_S = 0.25  # after the last final update: trailing work (user-stream events) lands in the step
SETTLE_MAX_S = 20.0
BURST_N = 300
IDLE_S = 5.0
PROBES = 5
IDLE_CPU_S = 10.0
BASELINE_N = 200
NOTIONAL_FACTOR = Decimal("1.1")
CPU_RATE = 200  # CPU per order is printed at this rate and at the knee
# A step is "behind schedule" when this client could not send on time (its own CPU, or a saturated
# machine): the offered rate was then lower or burstier than asked.
CLIENT_LAG_MS = 20.0
OTHER_WARN_PCT = 10.0  # "rest of machine" CPU while idle above which the run is flagged as disturbed
ANSWERED = frozenset({pb.SUBMITTED, pb.PARTIALLY_FILLED, pb.FILLED, pb.CANCELED, pb.REJECTED, pb.EXPIRED})
FINAL = frozenset({pb.FILLED, pb.CANCELED, pb.REJECTED, pb.EXPIRED})
# The exchange stand-in shares the two cores with the service, so it runs in its cheaper reference-price
# matching (about 0.2 ms less CPU per order than its order book); the service does the same work either way.
SIM_ARGS = ("--walk-interval-ms", "0", "--matching", "reference")


def ms(start: float, end: float | None) -> float | None:
    return None if end is None else (end - start) * 1000


def p50_p99(samples: Sequence[float]) -> tuple[float | None, float | None]:
    if not samples:
        return None, None
    return percentile(list(samples), 50), percentile(list(samples), 99)


def median_of(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# ---------------------------------------------------------------- what to trade


def order_quantities(base_url: str, symbols: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Per symbol: the smallest MARKET quantity meeting MIN_NOTIONAL (x1.1), and ccxt's symbol name."""
    with httpx.Client(base_url=base_url, timeout=5) as client:
        info = client.get("/fapi/v1/exchangeInfo").json()
        prices: dict[str, Decimal] = {}
        for path, key in (("/fapi/v1/ticker/price", "price"), ("/fapi/v1/premiumIndex", "markPrice")):
            reply = client.get(path)
            if reply.status_code == 200:
                for row in reply.json():
                    price = Decimal(row[key])
                    prices[row["symbol"]] = max(price, prices.get(row["symbol"], price))
    specs = {s["symbol"]: s for s in info["symbols"]}
    missing = [s for s in symbols if s not in specs]
    if missing:
        raise SystemExit(f"the simulator does not list {', '.join(missing)}; pick others with --symbols")
    quantities, ccxt_names = {}, {}
    for symbol in symbols:
        spec = specs[symbol]
        filters = {f["filterType"]: f for f in spec["filters"]}
        lots = [filters[k] for k in ("LOT_SIZE", "MARKET_LOT_SIZE") if k in filters]
        step = max(Decimal(lot["stepSize"]) for lot in lots)
        min_qty = max(Decimal(lot["minQty"]) for lot in lots)
        notional = Decimal(filters.get("MIN_NOTIONAL", {}).get("notional", "0"))
        if symbol in prices:
            needed = (notional * NOTIONAL_FACTOR / prices[symbol] / step).to_integral_value(
                ROUND_CEILING
            ) * step
        else:  # no price endpoint: the lot minimum with a generous factor
            needed = min_qty * 10
        quantity = max(min_qty, needed).quantize(step)
        quantities[symbol] = format(quantity, "f")
        ccxt_names[symbol] = (
            f"{spec.get('baseAsset', symbol[:-4])}/{spec.get('quoteAsset', 'USDT')}"
            f":{spec.get('marginAsset', 'USDT')}"
        )
    return quantities, ccxt_names


# ---------------------------------------------------------------- CPU from /proc

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
Snapshot = tuple[float, dict[str, dict[int, int]]]


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of every thread of `pid`, in clock ticks (None once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # fields[0] is the state, field 3 of proc(5)
    return int(fields[11]) + int(fields[12])


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (via /proc/<pid>/task/*/children)."""
    found, todo = [pid], [pid]
    while todo:
        parent = todo.pop()
        for path in glob.glob(f"/proc/{parent}/task/*/children"):
            try:
                children = [int(c) for c in Path(path).read_text().split()]
            except OSError:
                continue
            for child in children:
                if child not in found:
                    found.append(child)
                    todo.append(child)
    return found


def listening_pid(port: int) -> int | None:
    """The process listening on TCP `port` (its socket inode in /proc/net/tcp, found in /proc/*/fd)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{parts[9]}]")
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(proc.name)
        except OSError:
            continue
    return None


def pid_by_name(name: str) -> int | None:
    for comm in glob.glob("/proc/[0-9]*/comm"):
        try:
            if Path(comm).read_text().strip() == name:
                return int(comm.split("/")[2])
        except OSError:
            continue
    return None


def machine_busy_ticks() -> int:
    """Busy time of all CPUs (user+nice+system+irq+softirq+steal) from /proc/stat, in clock ticks."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return user + nice + system + irq + softirq + steal


OTHER = "rest of machine"


class CpuMeter:
    """CPU seconds per named group of processes between two snapshots.

    Also "rest of machine": all CPUs' busy time minus the groups', i.e. whatever else ran (other
    users' tests, the kernel's own work); large values mean the numbers were disturbed.
    """

    def __init__(self, groups: dict[str, tuple[int, bool]]) -> None:
        self.groups = groups  # name -> (pid, include its descendants)

    def snapshot(self) -> Snapshot:
        taken: dict[str, dict[int, int]] = {}
        for name, (pid, tree) in self.groups.items():
            ticks = {p: cpu_ticks(p) for p in (process_tree(pid) if tree else [pid])}
            taken[name] = {p: t for p, t in ticks.items() if t is not None}
        taken[OTHER] = {0: machine_busy_ticks()}
        return time.perf_counter(), taken

    @staticmethod
    def seconds(start: Snapshot, end: Snapshot) -> tuple[float, dict[str, float]]:
        """Wall seconds between the snapshots and CPU seconds per group (a new pid counts whole)."""
        out = {}
        for name, pids in end[1].items():
            before = start[1].get(name, {})
            out[name] = sum(max(0, t - before.get(p, 0)) for p, t in pids.items()) / CLOCK_TICKS
        machine = out.pop(OTHER)
        out[OTHER] = max(0.0, machine - sum(out.values()))
        return end[0] - start[0], out


def stack_meter(stack: LocalStack) -> CpuMeter:
    groups: dict[str, tuple[int, bool]] = {name: (p.pid, True) for name, p in stack.processes.items()}
    for name, port, comm in (
        ("redis", int(REDIS.rsplit(":", 1)[1]), "redis-server"),
        ("nats", urlsplit(NATS).port or 4222, "nats-server"),
    ):
        pid = listening_pid(port) or pid_by_name(comm)
        if pid is None:
            print(f"  note: no process found for {name}; its CPU is not measured", flush=True)
        else:
            groups[name] = (pid, True)
    groups["bench client"] = (os.getpid(), False)  # not its children: those are the stack
    return CpuMeter(groups)


def cpu_report(meter_start: Snapshot, meter_end: Snapshot, orders: int) -> dict[str, dict[str, float]]:
    wall, seconds = CpuMeter.seconds(meter_start, meter_end)
    return {
        name: {
            "ms_per_order": s * 1000 / orders if orders else math.nan,
            "pct_core": s / wall * 100 if wall > 0 else math.nan,
        }
        for name, s in seconds.items()
    }


# ---------------------------------------------------------------- the client


@dataclass
class Order:
    cid: str
    symbol: str
    request: pb.CreateOrderRequest
    scheduled: float = 0.0
    submit: float = 0.0
    ack: float | None = None
    answer: float | None = None
    final: float | None = None
    state: int = 0
    error: str = ""
    detail: str = ""

    def answered_in_time(self) -> bool:
        return self.answer is not None and self.answer - self.submit <= LOST_AFTER_S

    def summary(self) -> str:
        state = pb.OrderState.Name(pb.OrderState.ValueType(self.state)) if self.state else "no update"
        refused = f" refused {self.error} ({self.detail})" if self.error else ""
        return f"{self.cid} {self.symbol} {state}{refused}"


@dataclass
class Session:
    stub: order_pb2_grpc.OrderServiceAsyncStub
    symbols: list[str]
    quantities: dict[str, str]
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    orders: dict[str, Order] = field(default_factory=dict)
    sides: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seq: int = 0
    last_update: float = field(default_factory=time.perf_counter)
    resume_token: str = ""
    reconnects: int = 0

    def next_side(self, symbol: str) -> str:
        self.sides[symbol] += 1
        return "BUY" if self.sides[symbol] % 2 else "SELL"

    def new_order(self, symbol: str) -> Order:
        self.seq += 1
        cid = f"tp{self.tag}-{self.seq}"
        side = pb.BUY if self.next_side(symbol) == "BUY" else pb.SELL
        request = pb.CreateOrderRequest(
            symbol=symbol, side=side, type=pb.MARKET, quantity=self.quantities[symbol], client_order_id=cid
        )
        order = self.orders[cid] = Order(cid, symbol, request)
        return order

    def plan(self, n: int) -> list[Order]:
        return [self.new_order(self.symbols[i % len(self.symbols)]) for i in range(n)]

    async def read_stream(self) -> None:
        """Stamp answers and finals; on a dropped stream, resume after the last update seen."""
        while True:
            call = self.stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest(resume_token=self.resume_token))
            try:
                async for update in call:
                    now = time.perf_counter()
                    self.last_update = now
                    self.resume_token = update.resume_token
                    order = self.orders.get(update.order.client_order_id)
                    if order is None:
                        continue
                    state = update.order.state
                    if state in ANSWERED and order.answer is None:
                        order.answer = now
                    if state in FINAL and order.final is None:
                        order.final = now
                    order.state = state
                reason = "ended by the server"
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.CANCELLED:
                    return
                reason = f"{exc.code().name}: {exc.details()}"
            self.reconnects += 1
            print(f"  update stream closed ({reason}); resuming after the last update", flush=True)
            await asyncio.sleep(0.05)

    async def place(self, order: Order) -> None:
        order.submit = time.perf_counter()
        try:
            await self.stub.CreateOrder(order.request, timeout=LOST_AFTER_S)
            order.ack = time.perf_counter()
        except grpc.aio.AioRpcError as exc:
            order.error = exc.code().name
            order.detail = (exc.details() or "")[:160]

    async def drain(self, orders: Sequence[Order], tail_s: float = DRAIN_TAIL_S) -> None:
        """Until every order is final (or refused), at most LOST_AFTER_S after the last submit."""
        while True:
            last_submit = max(o.submit for o in orders)
            if all(o.final is not None or o.error for o in orders):
                break
            if time.perf_counter() > last_submit + LOST_AFTER_S:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(tail_s)

    async def settle(self, quiet_s: float = 1.0) -> None:
        """Until the stream has been quiet for `quiet_s` (a backlog left by a lost step is worked off)."""
        deadline = time.perf_counter() + SETTLE_MAX_S
        while time.perf_counter() < deadline and time.perf_counter() - self.last_update < quiet_s:
            await asyncio.sleep(0.1)


def latencies(orders: Sequence[Order]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"ack": [], "answer": [], "final": []}
    for o in orders:
        for key, at in (("ack", o.ack), ("answer", o.answer), ("final", o.final)):
            value = ms(o.submit, at)
            if value is not None and value <= LOST_AFTER_S * 1000:
                out[key].append(value)
    return out


def stats(orders: Sequence[Order]) -> dict[str, Any]:
    lat = latencies(orders)
    refused = [o for o in orders if o.error]
    lost = [o for o in orders if not o.error and not o.answered_in_time()]
    out: dict[str, Any] = {
        "orders": len(orders),
        "refused": len(refused),
        "refused_codes": sorted({o.error for o in refused}),
        "lost": len(lost),
        "not_filled": sum(1 for o in orders if o.final is not None and o.state != pb.FILLED),
        "lost_orders": [o.summary() for o in lost[:20]],
    }
    for key, samples in lat.items():
        out[f"{key}_p50_ms"], out[f"{key}_p99_ms"] = p50_p99(samples)
    return out


def print_lost(label: str, orders: Sequence[Order]) -> None:
    lost = [o for o in orders if o.error or not o.answered_in_time()]
    if lost:
        print(f"    {label}: {len(lost)} refused or unanswered within {LOST_AFTER_S:.0f} s:", flush=True)
        for o in lost[:10]:
            print(f"      {o.summary()}", flush=True)
        if len(lost) > 10:
            print(f"      ... and {len(lost) - 10} more", flush=True)


# ---------------------------------------------------------------- the measurements


async def sweep_step(
    session: Session, meter: CpuMeter, rate: int, step_s: float
) -> tuple[dict[str, Any], list[Order]]:
    orders = session.plan(max(2, round(rate * step_s)))
    cpu_start = meter.snapshot()
    start = time.perf_counter() + 0.002
    tasks = []
    for i, order in enumerate(orders):
        order.scheduled = start + i / rate
        delay = order.scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(session.place(order)))
    await asyncio.gather(*tasks)
    await session.drain(orders)
    cpu_end = meter.snapshot()
    submits = sorted(o.submit for o in orders)
    span = submits[-1] - submits[0]
    lags = [(o.submit - o.scheduled) * 1000 for o in orders]
    step = {
        "rate": rate,
        **stats(orders),
        "achieved_rate": (len(orders) - 1) / span if span > 0 else math.nan,
        "send_lag_p99_ms": percentile(lags, 99),
        "window_s": cpu_end[0] - cpu_start[0],
        "cpu": cpu_report(cpu_start, cpu_end, len(orders)),
    }
    step["behind_schedule"] = step["send_lag_p99_ms"] > CLIENT_LAG_MS or step["achieved_rate"] < 0.9 * rate
    return step, orders


def step_line(step: dict[str, Any]) -> str:
    cpu = step["cpu"]
    workers = sum(v["ms_per_order"] for k, v in cpu.items() if k.startswith("worker"))
    worker_pct = sum(v["pct_core"] for k, v in cpu.items() if k.startswith("worker"))
    total = sum(v["ms_per_order"] for v in cpu.values())
    return (
        f"{step['rate']:>5}/s: {step['orders']} sent at {step['achieved_rate']:.0f}/s "
        f"(lag p99 {step['send_lag_p99_ms']:.1f} ms{', BEHIND SCHEDULE' if step['behind_schedule'] else ''})"
        " | "
        f"ack {fmt(step['ack_p50_ms'])}/{fmt(step['ack_p99_ms'])} "
        f"update {fmt(step['answer_p50_ms'])}/{fmt(step['answer_p99_ms'])} "
        f"final {fmt(step['final_p50_ms'])}/{fmt(step['final_p99_ms'])} ms (p50/p99) | "
        f"lost {step['lost']} refused {step['refused']} | "
        f"cpu worker {workers:.2f} ms/order {worker_pct:.0f}%, machine {total:.2f} ms/order"
    )


async def sweep(
    session: Session, meter: CpuMeter, rates: Sequence[int], step_s: float
) -> tuple[list[dict[str, Any]], dict[int, list[Order]]]:
    steps, kept = [], {}
    for rate in rates:
        step, orders = await sweep_step(session, meter, rate, step_s)
        steps.append(step)
        kept[rate] = orders
        print("    " + step_line(step), flush=True)
        print_lost(f"{rate}/s", orders)
        too_slow = step["answer_p99_ms"] is None or step["answer_p99_ms"] > STOP_P99_MS
        if too_slow or step["lost"] or step["refused"]:
            print(
                f"    stopping the sweep at {rate}/s (p99 > {STOP_P99_MS:.0f} ms or orders unanswered)",
                flush=True,
            )
            break
    await session.settle()
    return steps, kept


async def burst(session: Session, meter: CpuMeter) -> tuple[dict[str, Any], list[Order]]:
    orders = session.plan(BURST_N)
    cpu_start = meter.snapshot()
    await asyncio.gather(*(session.place(o) for o in orders))
    await session.drain(orders)
    cpu_end = meter.snapshot()
    first = min(o.submit for o in orders)
    answers = [o.answer for o in orders if o.answer is not None and o.answered_in_time()]
    finals = [o.final for o in orders if o.final is not None]
    out = {
        **stats(orders),
        "first_submit_to_last_answer_ms": ms(first, max(answers)) if answers else None,
        "first_submit_to_last_final_ms": ms(first, max(finals)) if finals else None,
        "all_answered": len(answers) == len(orders),
        "cpu": cpu_report(cpu_start, cpu_end, len(orders)),
    }
    print(
        f"    burst {BURST_N}: first submit -> last answer {fmt(out['first_submit_to_last_answer_ms'])} ms, "
        f"CreateOrder p50/p99 {fmt(out['ack_p50_ms'])}/{fmt(out['ack_p99_ms'])} ms, lost {out['lost']}, "
        f"refused {out['refused']}",
        flush=True,
    )
    print_lost("burst", orders)
    await session.settle()
    return out, orders


async def idle_cpu(session: Session, meter: CpuMeter) -> dict[str, float]:
    await session.settle()
    start = meter.snapshot()
    await asyncio.sleep(IDLE_CPU_S)
    wall, seconds = CpuMeter.seconds(start, meter.snapshot())
    pct = {name: s / wall * 100 for name, s in seconds.items()}
    workers = sum(v for k, v in pct.items() if k.startswith("worker"))
    print(
        f"    idle {IDLE_CPU_S:.0f} s: worker {workers:.1f}% of a core; "
        + ", ".join(f"{k} {v:.1f}%" for k, v in pct.items()),
        flush=True,
    )
    return pct


async def after_idle(session: Session) -> list[Order]:
    probes = []
    for k in range(PROBES):
        await asyncio.sleep(IDLE_S)
        order = session.new_order(session.symbols[k % len(session.symbols)])
        await session.place(order)
        await session.drain([order], tail_s=0)
        probes.append(order)
    lat = latencies(probes)
    print(
        f"    after {IDLE_S:.0f} s idle ({PROBES} probes): "
        f"ack {', '.join(f'{v:.1f}' for v in lat['ack'])} ms; "
        f"update {', '.join(f'{v:.1f}' for v in lat['answer'])} ms",
        flush=True,
    )
    print_lost("after idle", probes)
    return probes


@dataclass(frozen=True)
class Account:
    """A second simulator account for the baselines: the service's listener does not see its orders."""

    key: str = field(default_factory=lambda: secrets.token_hex(32))
    secret: str = field(default_factory=lambda: secrets.token_hex(32))


async def httpx_baseline(base_url: str, account: Account, session: Session, n: int) -> list[float]:
    """Signed POST /fapi/v1/order MARKET straight to the simulator, one keep-alive client."""
    samples = []
    async with httpx.AsyncClient(
        base_url=base_url, headers={"X-MBX-APIKEY": account.key}, timeout=10
    ) as client:
        for i in range(n + 5):
            symbol = session.symbols[i % len(session.symbols)]
            started = time.perf_counter()
            query = signed_query(
                [
                    ("symbol", symbol),
                    ("side", session.next_side(symbol)),
                    ("type", "MARKET"),
                    ("quantity", session.quantities[symbol]),
                    ("timestamp", str(int(time.time() * 1000))),
                ],
                account.secret,
            )
            reply = await client.post(f"/fapi/v1/order?{query}")
            reply.raise_for_status()
            reply.json()
            if i >= 5:  # the first few warm the connection
                samples.append((time.perf_counter() - started) * 1000)
    return samples


async def ccxt_baseline(
    base_url: str, account: Account, session: Session, names: dict[str, str], n: int
) -> list[float]:
    """ccxt.async_support.binanceusdm create_order, URLs pointed at the simulator (as tests/simulator do)."""
    import ccxt.async_support as ccxt_async

    exchange = ccxt_async.binanceusdm(
        {
            "apiKey": account.key,
            "secret": account.secret,
            "enableRateLimit": False,
            "options": {"fetchCurrencies": False},
        }
    )
    for api, url in list(exchange.urls["api"].items()):
        exchange.urls["api"][api] = base_url + urlsplit(url).path
    samples = []
    try:
        await exchange.load_markets()
        for i in range(n + 5):
            symbol = session.symbols[i % len(session.symbols)]
            side = session.next_side(symbol).lower()
            started = time.perf_counter()
            await exchange.create_order(names[symbol], "market", side, float(session.quantities[symbol]))
            if i >= 5:
                samples.append((time.perf_counter() - started) * 1000)
    finally:
        await exchange.close()
    return samples


async def warm_up(session: Session) -> None:
    """One order per symbol twice (connections, rules caches, every symbol queue), until all answered."""
    for _ in range(2):
        orders = session.plan(len(session.symbols))
        await asyncio.gather(*(session.place(o) for o in orders))
        deadline = time.perf_counter() + 30
        while time.perf_counter() < deadline and not all(o.final is not None or o.error for o in orders):
            await asyncio.sleep(0.05)
        bad = [o for o in orders if o.error or o.final is None or o.state != pb.FILLED]
        if bad:
            raise SystemExit("warm-up orders failed: " + "; ".join(o.summary() for o in bad[:5]))


@dataclass
class RunResult:
    sweep: list[dict[str, Any]]
    burst: dict[str, Any]
    idle_cpu_pct: dict[str, float]
    after_idle: dict[str, list[float]]
    httpx_ms: list[float]
    ccxt_ms: list[float]
    samples: dict[int, dict[str, list[float]]]  # rate -> ack/answer/final samples


async def bench(
    stack: LocalStack, args: argparse.Namespace, symbols: list[str], account: Account
) -> list[RunResult]:
    quantities, ccxt_names = order_quantities(stack.exchange_base, symbols)
    print("  quantities: " + ", ".join(f"{s} {q}" for s, q in quantities.items()), flush=True)
    meter = stack_meter(stack)
    results = []
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        session = Session(order_pb2_grpc.OrderServiceStub(channel), symbols, quantities)
        reader = asyncio.create_task(session.read_stream())
        await asyncio.sleep(0.5)
        await warm_up(session)
        began = time.perf_counter()
        try:
            for run in range(1, args.runs + 1):
                print(
                    f"run {run}/{args.runs} (t+{time.perf_counter() - began:.0f} s): rate sweep", flush=True
                )
                steps, kept = await sweep(session, meter, args.rates, args.step_s)
                print(f"  run {run}: burst (t+{time.perf_counter() - began:.0f} s)", flush=True)
                burst_result, _ = await burst(session, meter)
                print(f"  run {run}: idle (t+{time.perf_counter() - began:.0f} s)", flush=True)
                idle = await idle_cpu(session, meter)
                probes = latencies(await after_idle(session))
                print(f"  run {run}: baselines (t+{time.perf_counter() - began:.0f} s)", flush=True)
                direct = await httpx_baseline(stack.exchange_base, account, session, BASELINE_N)
                via_ccxt = await ccxt_baseline(stack.exchange_base, account, session, ccxt_names, BASELINE_N)
                print(
                    f"    httpx p50/p99 {fmt(percentile(direct, 50), 2)}/"
                    f"{fmt(percentile(direct, 99), 2)} ms, ccxt {fmt(percentile(via_ccxt, 50), 2)}/"
                    f"{fmt(percentile(via_ccxt, 99), 2)} ms",
                    flush=True,
                )
                results.append(
                    RunResult(
                        steps,
                        burst_result,
                        idle,
                        probes,
                        direct,
                        via_ccxt,
                        {r: latencies(o) for r, o in kept.items()},
                    )
                )
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        if session.reconnects:
            print(f"  the update stream was resumed {session.reconnects} times", flush=True)
    return results


# ---------------------------------------------------------------- summary, table, plots


def combine_steps(runs: list[RunResult]) -> dict[int, dict[str, Any]]:
    by_rate: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        for step in run.sweep:
            by_rate[step["rate"]].append(step)
    out = {}
    for rate, steps in sorted(by_rate.items()):
        keys = [k for k, v in steps[0].items() if isinstance(v, int | float) and not isinstance(v, bool)]
        merged: dict[str, Any] = {k: median_of(s[k] for s in steps) for k in keys if k != "rate"}
        merged.update(
            rate=rate,
            runs=len(steps),
            lost=sum(s["lost"] for s in steps),
            refused=sum(s["refused"] for s in steps),
            behind_schedule=sum(1 for s in steps if s["behind_schedule"]),
            cpu={
                name: {
                    metric: median_of(s["cpu"].get(name, {}).get(metric) for s in steps)
                    for metric in ("ms_per_order", "pct_core")
                }
                for name in steps[0]["cpu"]
            },
        )
        out[rate] = merged
    return out


def find_knee(steps: dict[int, dict[str, Any]]) -> int | None:
    good = [
        rate
        for rate, s in steps.items()
        if s["answer_p99_ms"] is not None
        and s["answer_p99_ms"] <= KNEE_P99_MS
        and not s["lost"]
        and not s["refused"]
    ]
    return max(good) if good else None


def closest(steps: dict[int, Any], rate: int) -> int | None:
    return min(steps, key=lambda r: (abs(r - rate), r)) if steps else None


def summarize(runs: list[RunResult], args: argparse.Namespace) -> dict[str, Any]:
    steps = combine_steps(runs)
    knee = find_knee(steps)

    def med(values: Iterable[float | None]) -> float | None:
        return median_of(values)

    def pair(series: list[list[float]]) -> dict[str, float | None]:
        per_run = [p50_p99(s) for s in series]
        return {"p50_ms": med(p for p, _ in per_run), "p99_ms": med(p for _, p in per_run)}

    burst = {
        "first_submit_to_last_answer_ms": med(r.burst["first_submit_to_last_answer_ms"] for r in runs),
        "first_submit_to_last_final_ms": med(r.burst["first_submit_to_last_final_ms"] for r in runs),
        "ack_p50_ms": med(r.burst["ack_p50_ms"] for r in runs),
        "ack_p99_ms": med(r.burst["ack_p99_ms"] for r in runs),
        "answer_p50_ms": med(r.burst["answer_p50_ms"] for r in runs),
        "answer_p99_ms": med(r.burst["answer_p99_ms"] for r in runs),
        "lost": sum(r.burst["lost"] for r in runs),
        "refused": sum(r.burst["refused"] for r in runs),
        "cpu": {
            name: {m: med(r.burst["cpu"][name][m] for r in runs) for m in ("ms_per_order", "pct_core")}
            for name in runs[0].burst["cpu"]
        },
    }
    idle_cpu = {name: med(r.idle_cpu_pct.get(name) for r in runs) for name in runs[0].idle_cpu_pct}
    return {
        "steps": steps,
        "knee_rate": knee,
        "burst": burst,
        "idle_cpu_pct": idle_cpu,
        "idle_worker_cpu_pct": med(
            sum(v for k, v in r.idle_cpu_pct.items() if k.startswith("worker")) for r in runs
        ),
        "after_idle": {
            "ack": pair([r.after_idle["ack"] for r in runs]),
            "answer": pair([r.after_idle["answer"] for r in runs]),
            "final": pair([r.after_idle["final"] for r in runs]),
        },
        "httpx": pair([r.httpx_ms for r in runs]),
        "ccxt": pair([r.ccxt_ms for r in runs]),
    }


def ratio(value: float | None, base: float | None) -> str:
    return "-" if value is None or not base else f"{value / base:.1f}x"


def print_tables(summary: dict[str, Any], symbols: list[str]) -> list[str]:
    lines: list[str] = []

    def out(line: str = "") -> None:
        print(line)
        lines.append(line)

    steps: dict[int, dict[str, Any]] = summary["steps"]
    knee = summary["knee_rate"]
    out(
        f"\nThroughput: {len(symbols)} symbols, MARKET orders, "
        "gRPC client -> exchange answer on StreamOrderUpdates"
    )
    out("Rate sweep (ms; medians over runs of each run's p50 / p99; lost and refused summed over runs)")
    out(
        f"{'rate/s':>7} {'runs':>4} {'sent/s':>7} {'lag p99':>8} {'ack p50':>8} {'ack p99':>8} "
        f"{'upd p50':>8} {'upd p99':>8} {'fin p50':>8} {'fin p99':>8} {'lost':>5} {'refus':>5}  note"
    )
    for rate, s in steps.items():
        note = []
        if rate == knee:
            note.append("<- knee")
        if s["behind_schedule"]:
            note.append(f"client behind schedule in {s['behind_schedule']}/{s['runs']} runs")
        if s["answer_p99_ms"] is not None and s["answer_p99_ms"] > KNEE_P99_MS:
            note.append(f"p99 > {KNEE_P99_MS:.0f} ms")
        out(
            f"{rate:>7} {s['runs']:>4} {fmt(s['achieved_rate'], 0):>7} {fmt(s['send_lag_p99_ms']):>8} "
            f"{fmt(s['ack_p50_ms']):>8} {fmt(s['ack_p99_ms']):>8} {fmt(s['answer_p50_ms']):>8} "
            f"{fmt(s['answer_p99_ms']):>8} {fmt(s['final_p50_ms']):>8} {fmt(s['final_p99_ms']):>8} "
            f"{s['lost']:>5} {s['refused']:>5}  {', '.join(note)}"
        )

    httpx_p50, ccxt_p50 = summary["httpx"]["p50_ms"], summary["ccxt"]["p50_ms"]
    rows: list[tuple[str, float | None, float | None, str]] = []
    low = min(steps) if steps else None
    at_cpu = closest(steps, CPU_RATE)
    focus: dict[int, list[str]] = defaultdict(list)
    for label, maybe_rate in (("lowest", low), ("CPU rate", at_cpu), ("knee", knee)):
        if maybe_rate is not None:
            focus[maybe_rate].append(label)
    focus = dict(sorted(focus.items()))
    for rate, labels in focus.items():
        s = steps[rate]
        rows.append(
            (
                f"submit -> stream update @{rate}/s ({', '.join(labels)})",
                s["answer_p50_ms"],
                s["answer_p99_ms"],
                "" if s["lost"] == s["refused"] == 0 else f"lost {s['lost']}, refused {s['refused']}",
            )
        )
        rows.append((f"CreateOrder ack @{rate}/s", s["ack_p50_ms"], s["ack_p99_ms"], ""))
    b = summary["burst"]
    rows.append((f"burst {BURST_N}: CreateOrder ack", b["ack_p50_ms"], b["ack_p99_ms"], ""))
    rows.append(
        (
            f"burst {BURST_N}: submit -> stream update",
            b["answer_p50_ms"],
            b["answer_p99_ms"],
            f"first submit -> last answer {fmt(b['first_submit_to_last_answer_ms'])} ms",
        )
    )
    a = summary["after_idle"]
    rows.append(
        (
            f"after {IDLE_S:.0f} s idle: submit -> stream update",
            a["answer"]["p50_ms"],
            a["answer"]["p99_ms"],
            "",
        )
    )
    rows.append((f"after {IDLE_S:.0f} s idle: CreateOrder ack", a["ack"]["p50_ms"], a["ack"]["p99_ms"], ""))
    rows.append(
        (
            "baseline: signed httpx POST /fapi/v1/order",
            httpx_p50,
            summary["httpx"]["p99_ms"],
            "floor of the exchange hop",
        )
    )
    rows.append(
        ("baseline: ccxt binanceusdm create_order", ccxt_p50, summary["ccxt"]["p99_ms"], "user without us")
    )
    width = max(len(r[0]) for r in rows) + 2
    out(
        f"\nSummary (ms; medians over runs)   knee: {f'{knee}/s' if knee else 'none'} "
        f"(p99 update <= {KNEE_P99_MS:.0f} ms)"
    )
    out(f"{'metric':<{width}} {'p50':>8} {'p99':>8} {'p50/httpx':>10} {'p50/ccxt':>9}  note")
    for metric, p50, p99, remark in rows:
        out(
            f"{metric:<{width}} {fmt(p50, 2):>8} {fmt(p99, 2):>8} "
            f"{ratio(p50, httpx_p50):>10} {ratio(p50, ccxt_p50):>9}  {remark}"
        )
    if ccxt_p50 is not None:
        title = "service p50 minus ccxt create_order p50 (ms)"
        out(f"\n{title:<46} {'stream update':>14} {'CreateOrder ack':>16}")
        overheads = [
            (f"@{rate}/s ({', '.join(labels)})", steps[rate]["answer_p50_ms"], steps[rate]["ack_p50_ms"])
            for rate, labels in focus.items()
        ]
        overheads.append((f"after {IDLE_S:.0f} s idle", a["answer"]["p50_ms"], a["ack"]["p50_ms"]))
        overheads.append((f"burst {BURST_N}", b["answer_p50_ms"], b["ack_p50_ms"]))
        for label, update, ack in overheads:
            diffs = [f"{v - ccxt_p50:+.2f}" if v is not None else "-" for v in (update, ack)]
            out(f"{label:<46} {diffs[0]:>14} {diffs[1]:>16}")
    out(
        f"idle ({IDLE_CPU_S:.0f} s, {len(symbols)} symbol queues, no orders): "
        f"worker {fmt(summary['idle_worker_cpu_pct'])}% of a core"
    )

    names = list(next(iter(steps.values()))["cpu"]) if steps else []
    columns = [(f"@{r}/s" + (" knee" if r == knee else ""), r) for r in sorted(focus) if r in (at_cpu, knee)]
    out("\nCPU per order by process (ms of CPU per order; % of one core) during the sweep step, and idle")
    header = "".join(f" {label + ' ms/ord':>17} {'%core':>6}" for label, _ in columns)
    name_width = max([len(n) for n in names] + [7]) + 2
    out(f"{'process':<{name_width}}{header} {'idle %core':>11}")
    totals = [[0.0, 0.0] for _ in columns]
    for name in names:
        cells = ""
        for i, (_, column_rate) in enumerate(columns):
            cpu = steps[column_rate]["cpu"][name]
            per, pct = cpu.get("ms_per_order"), cpu.get("pct_core")
            totals[i][0] += per or 0
            totals[i][1] += pct or 0
            cells += f" {fmt(per, 3):>17} {fmt(pct, 1):>6}"
        out(f"{name:<{name_width}}{cells} {fmt(summary['idle_cpu_pct'].get(name), 1):>11}")
    total_idle = sum(v or 0 for v in summary["idle_cpu_pct"].values())
    out(
        f"{'total':<{name_width}}"
        + "".join(f" {t[0]:>17.3f} {t[1]:>6.1f}" for t in totals)
        + f" {total_idle:>11.1f}"
    )
    out(f"({OTHER}: all CPUs' busy time minus the rows above, i.e. anything else running on the machine)")
    other_idle = summary["idle_cpu_pct"].get(OTHER) or 0.0
    if other_idle > OTHER_WARN_PCT:
        out(
            f"WARNING: other processes kept {other_idle:.0f}% of a core busy while the stack was idle: "
            "the machine was shared during this run, so latencies and the knee are pessimistic"
        )
    return lines


def plot(summary: dict[str, Any], runs: list[RunResult]) -> list[Path]:
    steps: dict[int, dict[str, Any]] = summary["steps"]
    knee = summary["knee_rate"]
    rates = list(steps)
    paths = []
    RESULTS.mkdir(parents=True, exist_ok=True)

    fig, ax = plt.subplots(figsize=(9, 5))
    for key, label, style in (
        ("answer_p50_ms", "submit -> stream update p50", "o-"),
        ("answer_p99_ms", "submit -> stream update p99", "s-"),
        ("final_p99_ms", "submit -> final state p99", "d:"),
        ("ack_p99_ms", "CreateOrder ack p99", "^--"),
    ):
        xs = [r for r in rates if steps[r][key] is not None]
        ax.plot(xs, [steps[r][key] for r in xs], style, label=label)
    lost = [r for r in rates if steps[r]["lost"] or steps[r]["refused"]]
    if lost:
        ax.plot(
            lost,
            [steps[r]["answer_p99_ms"] or LOST_AFTER_S * 1000 for r in lost],
            "rx",
            ms=12,
            label="orders lost or refused",
        )
    ax.axhline(KNEE_P99_MS, color="grey", linestyle=":", label=f"{KNEE_P99_MS:.0f} ms limit")
    if knee:
        ax.axvline(knee, color="green", linestyle="--", label=f"knee {knee}/s")
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_xticks(rates, [str(r) for r in rates])
    ax.minorticks_off()
    ax.set_xlabel("offered rate (orders/s, log scale)")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_title(f"Latency vs rate (median over {len(runs)} runs)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    paths.append(RESULTS / f"{NAME}_latency.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 6))
    at = closest(steps, CPU_RATE)
    series: dict[str, tuple[list[float], str]] = {}
    plotted: set[int] = set()
    for rate, style in ((at, "-"), (knee, "-.")):
        if rate is None or rate in plotted:
            continue
        plotted.add(rate)
        note = " (knee)" if rate == knee else ""
        series[f"service: submit -> stream update @{rate}/s{note}"] = (
            [x for r in runs for x in r.samples.get(rate, {}).get("answer", [])],
            style,
        )
        series[f"service: CreateOrder ack @{rate}/s{note}"] = (
            [x for r in runs for x in r.samples.get(rate, {}).get("ack", [])],
            style,
        )
    series["baseline: signed httpx POST /fapi/v1/order"] = ([x for r in runs for x in r.httpx_ms], ":")
    series["baseline: ccxt binanceusdm create_order"] = ([x for r in runs for x in r.ccxt_ms], ":")
    for label, (samples, style) in series.items():
        if samples:
            ordered = sorted(samples)
            ax.plot(
                ordered,
                [(i + 1) / len(ordered) for i in range(len(ordered))],
                style,
                label=f"{label} (n={len(ordered)})",
            )
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of orders <= x")
    ax.set_title("Latency distribution (CDF), all runs pooled")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize="small")
    fig.tight_layout()
    paths.append(RESULTS / f"{NAME}_distribution.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 5))
    names = list(steps[rates[0]]["cpu"]) if rates else []
    bottoms = [0.0] * len(rates)
    positions = list(range(len(rates)))
    for name in names:
        values = [steps[r]["cpu"][name]["ms_per_order"] or 0.0 for r in rates]
        other = name == OTHER
        ax.bar(
            positions,
            values,
            bottom=bottoms,
            label=name,
            color="lightgrey" if other else None,
            hatch="//" if other else None,
        )
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    for x, total, r in zip(positions, bottoms, rates, strict=True):
        busy = sum(v["pct_core"] or 0.0 for v in steps[r]["cpu"].values())
        ax.annotate(
            f"{total:.1f} ms\n{busy:.0f}% core", (x, total), ha="center", va="bottom", fontsize="small"
        )
    ax.set_xticks(positions, [f"{r}/s" + ("\n(knee)" if r == knee else "") for r in rates])
    ax.set_ylim(0, max(bottoms, default=1) * 1.18)
    ax.set_xlabel("offered rate (annotated: total CPU per order; CPU busy, % of one core)")
    ax.set_ylabel("CPU ms per order")
    ax.set_title("CPU per order by process, during each sweep step (median over runs)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    fig.tight_layout()
    paths.append(RESULTS / f"{NAME}_cpu.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


# ---------------------------------------------------------------- main


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
        runs = asyncio.run(bench(stack, args, symbols, baseline_account))
        processes = {name: " ".join(p.command[1:]) for name, p in stack.processes.items()}
    summary = summarize(runs, args)
    table = print_tables(summary, symbols)
    paths = plot(summary, runs)
    at = closest(summary["steps"], CPU_RATE)
    path = write_json(
        NAME,
        {
            "bench": NAME,
            "title": "Throughput, latency under load and CPU per order (simulator exchange)",
            "machine": machine(),
            "notes": {
                "symbols": symbols,
                "rates": args.rates,
                "step_s": args.step_s,
                "redis_db": args.redis_db,
                "runs": args.runs,
                "load_test_mode": "local_stack(rate_limits=False)",
                "processes": processes,
                "knee_rule": (
                    f"highest rate with median p99 submit->stream update <= {KNEE_P99_MS} ms, none lost"
                ),
                "lost_after_s": LOST_AFTER_S,
                "cpu": "utime+stime from /proc incl. descendants; redis/nats are shared machine services",
                "elapsed_s": round(time.perf_counter() - started, 1),
            },
            "summary": {**summary, "steps": {str(k): v for k, v in summary["steps"].items()}},
            "table": table,
            "runs": [
                {
                    "sweep": r.sweep,
                    "burst": r.burst,
                    "idle_cpu_pct": r.idle_cpu_pct,
                    "after_idle_ms": r.after_idle,
                    "httpx_ms": r.httpx_ms,
                    "ccxt_ms": r.ccxt_ms,
                    f"samples_at_{at}_ms": r.samples.get(at) if at is not None else None,
                }
                for r in runs
            ],
        },
    )
    print(
        f"\nwrote {path} and {', '.join(p.name for p in paths)} "
        f"({time.perf_counter() - started:.0f} s in all)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
