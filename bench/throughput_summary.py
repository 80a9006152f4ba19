"""The throughput bench's summary: each run's numbers merged into medians over runs, the knee, and
the headline ratios (each taken within one run, then the median over runs)."""

from __future__ import annotations

import os
import statistics
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from bench.cpu_meter import OTHER
from bench.load_phases import RunResult, is_service
from bench.load_session import p50_p99

KNEE_P99_MS = 50.0
SERVICE_CPU_RATE = 200  # the service's CPU per order is compared with the transport floor at this rate
LATENCY_RATE = 50  # submit -> update p50 is compared with ccxt's create_order at this rate
LOW_RATE = 50  # the whole machine's CPU per order at this rate is compared with that at SERVICE_CPU_RATE


def median_of(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


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


def step_passes(step: dict[str, Any]) -> bool:
    """A (merged) step is within the knee: median p99 submit -> stream update (from the scheduled
    send, timeouts counted) at most KNEE_P99_MS, no order lost or refused in any run, and the client
    on schedule in every run."""
    p99 = step["answer_p99_ms"]
    return (
        p99 is not None
        and p99 <= KNEE_P99_MS
        and not step["lost"]
        and not step["refused"]
        and not step["behind_schedule"]
    )


def find_knee(steps: dict[int, dict[str, Any]]) -> int | None:
    """The highest rate up to which every step passes (`step_passes`); None if the lowest fails.
    A passing step above a failing one is noise, not capacity: it does not move the knee."""
    knee = None
    for rate in sorted(steps):
        if not step_passes(steps[rate]):
            break
        knee = rate
    return knee


def closest(steps: dict[int, Any], rate: int) -> int | None:
    return min(steps, key=lambda r: (abs(r - rate), r)) if steps else None


def cpu_rates(steps: dict[int, Any], knee: int | None) -> list[int]:
    """The sweep rates whose CPU per process is shown: LOW_RATE, SERVICE_CPU_RATE (each, or the
    closest rate the sweep ran) and the knee, each once, in order."""
    wanted = {closest(steps, LOW_RATE), closest(steps, SERVICE_CPU_RATE), knee}
    return sorted(r for r in wanted if r is not None)


def summarize_floor(runs: list[RunResult], steps: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per floor rate: the API's and the exchange hop's CPU per order (medians over runs), plus Redis
    and NATS as the sweep step closest to that rate measured them; their total, and the highest rate
    this machine's cores could carry at that cost with nothing else to do."""
    cores = os.cpu_count() or 1
    out: dict[int, dict[str, Any]] = {}
    for rate in runs[0].floor:
        parts: dict[str, float | None] = {
            "gRPC API: echo server": median_of(r.floor[rate]["api"]["server"] for r in runs),
            "gRPC API: client": median_of(r.floor[rate]["api"]["client"] for r in runs),
            "exchange hop: simulator": median_of(r.floor[rate]["exchange"]["simulator"] for r in runs),
            "exchange hop: aiohttp client": median_of(r.floor[rate]["exchange"]["client"] for r in runs),
        }
        at = closest(steps, rate)
        for name in ("redis", "nats"):
            parts[name] = steps[at]["cpu"].get(name, {}).get("ms_per_order") if at is not None else None
        total = sum(v or 0.0 for v in parts.values())
        out[rate] = {
            "parts_ms_per_order": parts,
            "redis_nats_from_sweep_rate": at,
            "total_ms_per_order": total,
            "cores": cores,
            "max_rate": cores * 1000 / total if total else None,
        }
    return out


def run_step(run: RunResult, rate: int) -> dict[str, Any] | None:
    """`run`'s sweep step at exactly `rate`, if the sweep ran it."""
    return next((step for step in run.sweep if step["rate"] == rate), None)


def service_ms(step: dict[str, Any]) -> float:
    """CPU ms per order of the service's own processes (gateway + workers + listeners) in `step`."""
    return sum(v["ms_per_order"] or 0.0 for k, v in step["cpu"].items() if is_service(k))


def machine_ms(step: dict[str, Any], *, rest: bool = True) -> float:
    """CPU ms per order of the whole machine in `step`: every group, "rest of machine" included
    unless `rest` is false (then only the processes measured by name: the stack, Redis, NATS and
    the bench client, without whatever else ran on the machine)."""
    return sum(v["ms_per_order"] or 0.0 for k, v in step["cpu"].items() if rest or k != OTHER)


def floor_ms(run: RunResult, rate: int) -> float | None:
    """`run`'s transport floor at `rate` (ms of CPU per order): the API and the exchange hop as
    measured at that rate, plus Redis and NATS as the same run's sweep step nearest it saw them."""
    floor = run.floor.get(rate)
    by_rate = {step["rate"]: step for step in run.sweep}
    at = closest(by_rate, rate)
    if floor is None or at is None:
        return None
    hops = sum(floor["api"].values()) + sum(floor["exchange"].values())
    cpu = by_rate[at]["cpu"]
    return hops + sum(cpu.get(name, {}).get("ms_per_order") or 0.0 for name in ("redis", "nats"))


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return None if numerator is None or not denominator else numerator / denominator


def headline(runs: list[RunResult]) -> dict[str, Any]:
    """The issue's three figures, each a ratio or difference taken within one run (so both sides
    share that run's machine and noise), then the median over runs; with each run's value and the
    medians of both sides."""
    service, floor, cpu_ratio = [], [], []
    update, ccxt, diff = [], [], []
    low, high, machine_ratio, named_ratio = [], [], [], []
    for run in runs:
        at_cpu, at_latency, at_low = (
            run_step(run, SERVICE_CPU_RATE),
            run_step(run, LATENCY_RATE),
            run_step(run, LOW_RATE),
        )
        s = service_ms(at_cpu) if at_cpu else None
        f = floor_ms(run, SERVICE_CPU_RATE)
        service.append(s)
        floor.append(f)
        cpu_ratio.append(_ratio(s, f))
        u = at_latency["answer_p50_ms"] if at_latency else None
        c = p50_p99(run.ccxt_ms)[0]
        update.append(u)
        ccxt.append(c)
        diff.append(None if u is None or c is None else u - c)
        lo = machine_ms(at_low) if at_low else None
        hi = machine_ms(at_cpu) if at_cpu else None
        low.append(lo)
        high.append(hi)
        machine_ratio.append(_ratio(lo, hi))
        named_ratio.append(
            _ratio(machine_ms(at_low, rest=False), machine_ms(at_cpu, rest=False))
            if at_low and at_cpu
            else None
        )
    return {
        "service_cpu_x_floor": {
            "rate": SERVICE_CPU_RATE,
            "value": median_of(cpu_ratio),
            "runs": cpu_ratio,
            "service_ms_per_order": median_of(service),
            "floor_ms_per_order": median_of(floor),
        },
        "update_p50_minus_ccxt_ms": {
            "rate": LATENCY_RATE,
            "value": median_of(diff),
            "runs": diff,
            "update_p50_ms": median_of(update),
            "ccxt_p50_ms": median_of(ccxt),
        },
        "machine_cpu_low_over_high": {
            "low_rate": LOW_RATE,
            "high_rate": SERVICE_CPU_RATE,
            "value": median_of(machine_ratio),
            "runs": machine_ratio,
            "low_ms_per_order": median_of(low),
            "high_ms_per_order": median_of(high),
            # the same without "rest of machine": what a neighbour's load adds weighs most at low rates
            "named_processes_value": median_of(named_ratio),
        },
    }


def _num(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def headline_lines(figures: dict[str, Any]) -> list[str]:
    """The headline figures as the lines scripts read, one figure each (n/a when no run had the rate
    or the baseline)."""
    cpu = figures["service_cpu_x_floor"]
    latency = figures["update_p50_minus_ccxt_ms"]
    machine = figures["machine_cpu_low_over_high"]
    y = latency["value"]
    return [
        f"service CPU per order at {cpu['rate']}/s = {_num(cpu['value'], 2)} x transport floor",
        f"submit -> update p50 at {latency['rate']}/s = ccxt "
        + ("+ n/a" if y is None else f"{'+' if y >= 0 else '-'} {abs(y):.2f}")
        + " ms",
        f"whole machine CPU per order at {machine['low_rate']}/s = {_num(machine['value'], 2)} x "
        f"that at {machine['high_rate']}/s",
    ]


def summarize(runs: list[RunResult]) -> dict[str, Any]:
    """Medians over runs: the sweep steps by rate, the knee, burst, idle CPU per process, after
    idle, baselines, the transport floor and the headline figures."""
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
        "first_submit_to_last_fill_ms": med(r.burst["first_submit_to_last_fill_ms"] for r in runs),
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
        "after_idle": {
            "ack": pair([r.after_idle["ack"] for r in runs]),
            "answer": pair([r.after_idle["answer"] for r in runs]),
            "final": pair([r.after_idle["final"] for r in runs]),
            "fill": pair([r.after_idle["fill"] for r in runs]),
        },
        "httpx": pair([r.httpx_ms for r in runs]),
        "ccxt": pair([r.ccxt_ms for r in runs]),
        "floor": summarize_floor(runs, steps),
        "headline": headline(runs),
    }
