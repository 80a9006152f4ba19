"""The throughput bench's load phases, run against a local stack and repeated per run.

Warm-up, then per run: the open-loop rate sweep (one CPU window per step over its steady part,
stopping once a step is too slow or loses orders), the burst, idle CPU, single orders after
idle, the baselines and the transport floor. `run_load` runs them all and returns one
`RunResult` per run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from bench.cpu_meter import CpuMeter, cpu_report, stack_meter
from bench.echo_service import MARKET_ORDER_STATES
from bench.exchange_baselines import BASELINE_N, Account, ccxt_baseline, httpx_baseline
from bench.load_session import (
    Order,
    Session,
    latencies,
    ms,
    order_quantities,
    print_lost,
    stats,
    wait_until,
)
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
STEP_S = 10.0  # long enough to be steady at every rate near the knee
# The first second of each step is warm-up: its orders are sent (and count as lost or refused if
# they are), but neither their latencies nor the CPU spent while they went out are measured, so a
# step starting from an empty system does not look better than the steady state it settles into.
WARMUP_S = 1.0
# A step is "behind schedule" when this client could not send on time (its own CPU, or a saturated
# machine): the offered rate was then lower or burstier than asked, and the step is past the knee.
CLIENT_LAG_MS = 20.0
MIN_ACHIEVED = 0.9  # a step that sent fewer than this share of its rate is behind schedule too
FLOOR_RATES = (200, 600)  # the rates of the CPU target and of its old knee target
UPDATES_PER_ORDER = len(MARKET_ORDER_STATES)  # what StreamOrderUpdates sends for a MARKET order
# Counts over the whole step, warm-up included: a failure is never left out.
WHOLE_STEP_KEYS = ("orders", "refused", "refused_codes", "lost", "not_filled", "lost_orders")


def behind_schedule(step: dict[str, Any]) -> bool:
    """Whether the client fell behind its schedule in `step`: its send lag p99 over CLIENT_LAG_MS,
    or an achieved rate under MIN_ACHIEVED of the asked one."""
    lag = step.get("lag_p99_ms")
    achieved = step.get("achieved_rate")
    return bool(
        (lag is not None and lag > CLIENT_LAG_MS)
        or (achieved is not None and achieved < MIN_ACHIEVED * step["rate"])
    )


async def sweep_step(
    session: Session, meter: CpuMeter, rate: int, step_s: float, warmup_s: float = WARMUP_S
) -> tuple[dict[str, Any], list[Order]]:
    """`rate` orders/s for `step_s` seconds on a schedule fixed before the first send, then until
    every order settled (at most LOST_AFTER_S). Latencies, lag and CPU cover the steady part: the
    orders scheduled from `warmup_s` on, and the CPU between sending the first and the last of
    them; lost and refused count every order of the step. Returns the step's figures and the
    steady orders."""
    orders = session.plan(max(2, round(rate * step_s)))
    start = time.perf_counter() + 0.002
    for i, order in enumerate(orders):
        order.scheduled = start + i / rate
    measured = [o for o in orders if o.origin() >= start + warmup_s]
    if len(measured) < 2:
        raise ValueError(
            f"a {step_s:g} s step at {rate}/s leaves under 2 orders after {warmup_s:g} s warm-up"
        )
    first = measured[0]
    tasks = []
    cpu_start = None
    for order in orders:
        if order is first:  # reading /proc takes a moment: before the wait, not in the send's way
            cpu_start = meter.snapshot()
        await wait_until(order.origin())
        tasks.append(asyncio.create_task(session.place(order)))
    cpu_end = meter.snapshot()
    assert cpu_start is not None
    await asyncio.gather(*tasks)
    await session.drain(orders)
    whole = stats(orders)
    submits = sorted(o.submit for o in measured)
    span = submits[-1] - submits[0]
    achieved = (len(measured) - 1) / span if span > 0 else float(rate)
    window = cpu_end[0] - cpu_start[0]
    step = {
        "rate": rate,
        **stats(measured),
        **{key: whole[key] for key in WHOLE_STEP_KEYS},
        "measured_orders": len(measured),
        "warmup_orders": len(orders) - len(measured),
        "achieved_rate": achieved,
        "window_s": window,
        # CPU per second over orders per second: the window's edges need not fall on sends
        "cpu": cpu_report(cpu_start, cpu_end, window * achieved),
    }
    step["behind_schedule"] = behind_schedule(step)
    return step, measured


def step_line(step: dict[str, Any]) -> str:
    """One printed line per sweep step: what was sent, lag, latencies, failures and CPU."""
    cpu = step["cpu"]
    service = sum(v["ms_per_order"] for k, v in cpu.items() if is_service(k))
    total = sum(v["ms_per_order"] for v in cpu.values())
    return (
        f"{step['rate']:>5}/s: {step['measured_orders']} measured (+{step['warmup_orders']} warm-up) "
        f"sent at {step['achieved_rate']:.0f}/s "
        f"(lag p50/p99 {fmt(step['lag_p50_ms'], 2)}/{fmt(step['lag_p99_ms'], 1)} ms"
        f"{', BEHIND SCHEDULE' if step['behind_schedule'] else ''}) | "
        f"ack {fmt(step['ack_p50_ms'])}/{fmt(step['ack_p99_ms'])} "
        f"update {fmt(step['answer_p50_ms'])}/{fmt(step['answer_p99_ms'])} "
        f"final {fmt(step['final_p50_ms'])}/{fmt(step['final_p99_ms'])} "
        f"fill {fmt(step['fill_p50_ms'])}/{fmt(step['fill_p99_ms'])} ms (p50/p99 from schedule) | "
        f"lost {step['lost']} refused {step['refused']} | "
        f"cpu service {service:.2f} ms/order, machine {total:.2f} ms/order"
    )


def is_service(process: str) -> bool:
    """Whether `process` (a CPU group's name) is one of the service's own: gateway, a worker, a listener."""
    return process == "gateway" or process.startswith(("worker", "listener"))


async def sweep(
    session: Session, meter: CpuMeter, rates: Sequence[int], step_s: float, warmup_s: float = WARMUP_S
) -> tuple[list[dict[str, Any]], dict[int, list[Order]]]:
    """One step per rate, in order, until a step's p99 passes STOP_P99_MS or it loses or refuses
    an order; returns the steps and each step's steady orders."""
    steps, kept = [], {}
    for rate in rates:
        step, orders = await sweep_step(session, meter, rate, step_s, warmup_s)
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
    """BURST_N CreateOrders started together, all scheduled at the same instant: each latency runs
    from there, so the client's own time to send them all is in it."""
    orders = session.plan(BURST_N)
    cpu_start = meter.snapshot()
    fired = time.perf_counter()
    for order in orders:
        order.scheduled = fired
    await asyncio.gather(*(session.place(o) for o in orders))
    await session.drain(orders)
    cpu_end = meter.snapshot()
    first = fired
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
    """% of one core per process (each on its own) over IDLE_CPU_S with no orders."""
    await session.settle()
    start = meter.snapshot()
    await asyncio.sleep(IDLE_CPU_S)
    wall, seconds = CpuMeter.seconds(start, meter.snapshot())
    pct = {name: s / wall * 100 for name, s in seconds.items()}
    print(
        f"    idle {IDLE_CPU_S:.0f} s, % of one core per process: "
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
    samples: dict[int, dict[str, list[float]]]  # rate -> ack/answer/final/fill/lag samples (steady part)
    floor: dict[int, dict[str, dict[str, float]]]  # rate -> "api"/"exchange" -> process -> CPU ms/order


async def run_load(
    stack: LocalStack,
    redis_address: str,
    symbols: list[str],
    account: Account,
    runs: int,
    rates: Sequence[int],
    step_s: float,
    warmup_s: float = WARMUP_S,
) -> list[RunResult]:
    """Warm up, then `runs` times: sweep `rates` (`step_s` seconds each, the first `warmup_s` not
    measured), burst, idle, after idle and the baselines and the transport floor (on `account`);
    one RunResult per run. Calls send the stack's API key (`stack.grpc_api_key`) when it has one.
    Progress is printed as it goes."""
    quantities, ccxt_names = order_quantities(stack.exchange_base, symbols)
    print("  quantities: " + ", ".join(f"{s} {q}" for s, q in quantities.items()), flush=True)
    meter = stack_meter(stack, redis_address)
    results = []
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        session = Session(
            order_pb2_grpc.OrderServiceStub(channel), symbols, quantities, api_key=stack.grpc_api_key
        )
        reader = asyncio.create_task(session.read_stream())
        await asyncio.sleep(0.5)
        await warm_up(session)
        began = time.perf_counter()
        try:
            for run in range(1, runs + 1):
                print(f"run {run}/{runs} (t+{time.perf_counter() - began:.0f} s): rate sweep", flush=True)
                steps, kept = await sweep(session, meter, rates, step_s, warmup_s)
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
                        {r: {**latencies(o), "lag": [x.lag_ms() for x in o]} for r, o in kept.items()},
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
        api = await api_floor(rate, stack.log_dir, UPDATES_PER_ORDER, session.metadata)
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
