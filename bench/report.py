"""Shared output for benchmarks: a printed table, a JSON file and a PNG plot per bench.

Every series is a list of runs, each run a list of samples in milliseconds. The table
shows per-run medians and p99s, their median over runs, and the ratio to the bench's
baseline series measured in the same invocation.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def fmt(value: float | None, digits: int = 1) -> str:
    """`value` with `digits` decimals for a printed table; "-" when there is none."""
    return "-" if value is None else f"{value:.{digits}f}"


def machine() -> dict[str, object]:
    """What the numbers were measured on and when (stored with every result file): CPU model and
    cores, Python, kernel, platform, the UTC date and the git commit of the bench (with `dirty`
    when the checkout had uncommitted changes)."""
    commit, dirty = _git_commit()
    return {
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "platform": platform.platform(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": commit,
        "git_dirty": dirty,
    }


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> tuple[str | None, bool | None]:
    """HEAD of the checkout the bench runs from, and whether tracked files differ from it."""
    repo = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return head, bool(status.strip())


# A JSON array of numbers only (as json.dumps writes them, NaN and infinities included).
_NUMBER = r"(?:-?\d[\d.eE+-]*|NaN|-?Infinity)"
_NUMBER_LIST = re.compile(rf"\[\s*{_NUMBER}(?:,\s*{_NUMBER})*\s*\]")


def dumps(payload: Mapping[str, Any]) -> str:
    """`payload` as indented JSON, with each array of numbers (samples) on one line: readable,
    and a few times smaller than one number per line."""
    text = json.dumps(payload, indent=1)
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(re.findall(_NUMBER, m.group(0))) + "]", text)


def write_json(name: str, payload: Mapping[str, Any]) -> Path:
    """Write results/<name>.json (the directory is created if needed) and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(dumps(payload))
    return path


def summarize(runs: list[list[float]]) -> dict[str, float]:
    medians = [statistics.median(r) for r in runs]
    p99s = [percentile(r, 99) for r in runs]
    return {
        "median_ms": statistics.median(medians),
        "p99_ms": statistics.median(p99s),
        "worst_run_p99_ms": max(p99s),
        "runs": len(runs),
        "samples_per_run": min(len(r) for r in runs),
    }


def report(
    name: str,
    title: str,
    series: dict[str, list[list[float]]],
    baseline: str | Mapping[str, str],
    notes: dict[str, object] | None = None,
) -> dict[str, dict[str, float]]:
    """Print the table, write results/<name>.json and results/<name>.png; return the summary.

    `baseline` is the series every ratio is taken against, or per series (label -> its
    baseline's label) when the table holds several measures, each with its own baseline.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary = {label: summarize(runs) for label, runs in series.items()}
    baselines = {label: baseline for label in series} if isinstance(baseline, str) else dict(baseline)
    width = max(len(label) for label in series) + 2
    print(f"\n{title}")
    print(
        f"{'series':<{width}} {'median ms':>10} {'p99 ms':>10} {'worst p99':>10} {'x baseline':>11}  runs x n"
    )
    for label, s in summary.items():
        base = summary[baselines[label]]["median_ms"]
        ratio = s["median_ms"] / base if base else float("nan")
        s["ratio_to_baseline"] = ratio
        print(
            f"{label:<{width}} {s['median_ms']:>10.3f} {s['p99_ms']:>10.3f} {s['worst_run_p99_ms']:>10.3f} "
            f"{ratio:>11.2f}  {s['runs']} x {s['samples_per_run']}"
        )
    payload = {
        "bench": name,
        "title": title,
        "baseline": baselines,
        "summary": summary,
        "machine": machine(),
        "notes": notes or {},
        "runs_ms": series,
    }
    write_json(name, payload)
    _plot(name, title, series)
    print(f"wrote {RESULTS / (name + '.json')} and .png")
    return summary


def _plot(name: str, title: str, series: dict[str, list[list[float]]]) -> None:
    fig, ax = plt.subplots(figsize=(9, 5))
    for label, runs in series.items():
        samples = sorted(x for run in runs for x in run)
        if not samples:
            continue
        fractions = [(i + 1) / len(samples) for i in range(len(samples))]
        ax.plot(samples, fractions, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of samples ≤ x")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=110)
    plt.close(fig)
