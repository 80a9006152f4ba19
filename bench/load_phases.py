"""The throughput bench's load phases, run against a local stack and repeated per run.

Warm-up, then per run: the open-loop rate sweep (one CPU window per step, stopping once a step
is too slow or loses orders), the burst, idle CPU, single orders after idle, the
baselines and the transport floor. `run_load` runs them all and returns one `RunResult` per run.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from bench.cpu_meter import CpuMeter, cpu_report, stack_meter
from bench.echo_service import MARKET_ORDER_STATES
from bench.exchange_baselines import BASELINE_N, Account, ccxt_baseline, httpx_baseline
from bench.load_session import Order, Session, latencies, ms, order_quantities, print_lost, stats
from bench.report import fmt, percentile
from bench.transport_floor import api_floor, exchange_floor
from order_execution.launcher.stack import LocalStack
from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc

STOP_P99_MS = 1000.0
BURST_N = 300
IDLE_S = 5.0
PROBES = 5
IDLE_CPU_S = 10.0
# A step is "behind schedule" when this client could not send on time (its own CPU, or a saturated
# machine): the offered rate was then lower or burstier than asked.
CLIENT_LAG_MS = 20.0
FLOOR_RATES = (200, 600)  # the rates of the latency target and of its knee target
UPDATES_PER_ORDER = len(MARKET_ORDER_STATES)  # what StreamOrderUpdates sends for a MARKET order


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
        f"final {fmt(step['final_p50_ms'])}/{fmt(step['final_p99_ms'])} "
        f"fill {fmt(step['fill_p50_ms'])}/{fmt(step['fill_p99_ms'])} ms (p50/p99) | "
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
    fills = [o.fill for o in orders if o.fill is not None]
    out = {
        **stats(orders),
        "first_submit_to_last_answer_ms": ms(first, max(answers)) if answers else None,
        "first_submit_to_last_final_ms": ms(first, max(finals)) if finals else None,
        "first_submit_to_last_fill_ms": ms(first, max(fills)) if fills else None,
        "all_answered": len(answers) == len(orders),
        "cpu": cpu_report(cpu_start, cpu_end, len(orders)),
    }
    print(
        f"    burst {BURST_N}: first submit -> last answer {fmt(out['first_submit_to_last_answer_ms'])} ms "
        f"(last trades recorded {fmt(out['first_submit_to_last_fill_ms'])} ms), "
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
    floor: dict[int, dict[str, dict[str, float]]]  # rate -> "api"/"exchange" -> process -> CPU ms/order


async def run_load(
    stack: LocalStack,
    redis_address: str,
    symbols: list[str],
    account: Account,
    runs: int,
    rates: Sequence[int],
    step_s: float,
) -> list[RunResult]:
    """Warm up, then `runs` times: sweep `rates` (`step_s` seconds each), burst, idle, after idle and
    the baselines and the transport floor (on `account`); one RunResult per run. Progress is printed
    as it goes."""
    quantities, ccxt_names = order_quantities(stack.exchange_base, symbols)
    print("  quantities: " + ", ".join(f"{s} {q}" for s, q in quantities.items()), flush=True)
    meter = stack_meter(stack, redis_address)
    results = []
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        session = Session(order_pb2_grpc.OrderServiceStub(channel), symbols, quantities)
        reader = asyncio.create_task(session.read_stream())
        await asyncio.sleep(0.5)
        await warm_up(session)
        began = time.perf_counter()
        try:
            for run in range(1, runs + 1):
                print(f"run {run}/{runs} (t+{time.perf_counter() - began:.0f} s): rate sweep", flush=True)
                steps, kept = await sweep(session, meter, rates, step_s)
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
                print(f"  run {run}: transport floor (t+{time.perf_counter() - began:.0f} s)", flush=True)
                floor = await transport_floor(stack, account, session)
                results.append(
                    RunResult(
                        steps,
                        burst_result,
                        idle,
                        probes,
                        direct,
                        via_ccxt,
                        {r: latencies(o) for r, o in kept.items()},
                        floor,
                    )
                )
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        if session.reconnects:
            print(f"  the update stream was resumed {session.reconnects} times", flush=True)
    return results


async def transport_floor(
    stack: LocalStack, account: Account, session: Session
) -> dict[int, dict[str, dict[str, float]]]:
    """The API's and the exchange hop's CPU per order with no service logic, at each FLOOR_RATES."""
    assert stack.log_dir is not None
    floor = {}
    for rate in FLOOR_RATES:
        api = await api_floor(rate, stack.log_dir, UPDATES_PER_ORDER)
        hop = await exchange_floor(
            rate, stack.exchange_base, account, session, stack.processes["simulator"].pid
        )
        floor[rate] = {"api": api, "exchange": hop}
        print(
            f"    @{rate}/s: gRPC API server {api['server']:.2f} + client {api['client']:.2f}, "
            f"exchange hop simulator {hop['simulator']:.2f} + client {hop['client']:.2f} ms CPU/order",
            flush=True,
        )
    return floor
