"""The throughput bench's summary: each run's numbers merged into medians over runs, and the knee."""

from __future__ import annotations

import os
import statistics
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from bench.load_phases import RunResult
from bench.load_session import p50_p99

KNEE_P99_MS = 50.0


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


def summarize(runs: list[RunResult]) -> dict[str, Any]:
    """Medians over runs: the sweep steps by rate, the knee, burst, idle CPU, after idle, baselines."""
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
        "idle_worker_cpu_pct": med(
            sum(v for k, v in r.idle_cpu_pct.items() if k.startswith("worker")) for r in runs
        ),
        "after_idle": {
            "ack": pair([r.after_idle["ack"] for r in runs]),
            "answer": pair([r.after_idle["answer"] for r in runs]),
            "final": pair([r.after_idle["final"] for r in runs]),
            "fill": pair([r.after_idle["fill"] for r in runs]),
        },
        "httpx": pair([r.httpx_ms for r in runs]),
        "ccxt": pair([r.ccxt_ms for r in runs]),
        "floor": summarize_floor(runs, steps),
    }
