"""The throughput bench's output: the printed tables, the PNG plots and the JSON results file.

Writes bench/results/throughput.json and throughput_latency.png, throughput_distribution.png,
throughput_cpu.png (bench/report.py's RESULTS); `publish` copies them to docs/performance/.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.cpu_meter import OTHER
from bench.load_phases import (
    BURST_N,
    CLIENT_LAG_MS,
    IDLE_CPU_S,
    IDLE_S,
    UPDATES_PER_ORDER,
    RunResult,
    is_service,
)
from bench.load_session import LOST_AFTER_S, TIMEOUT_MS
from bench.report import RESULTS, fmt, machine, write_json
from bench.throughput_markdown import MACHINE_ROW, OTHER_WARN_PCT, SERVICE_ROW, step_notes
from bench.throughput_summary import (
    KNEE_P99_MS,
    LOW_RATE,
    SERVICE_CPU_RATE,
    closest,
    cpu_rates,
    headline_lines,
)

NAME = "throughput"
CPU_RATE = SERVICE_CPU_RATE  # the summary's focus rate: its latencies and CPU are printed
PUBLISHED = Path(__file__).resolve().parents[1] / "docs" / "performance"
PLOTS = ("latency", "distribution", "cpu")


def ratio(value: float | None, base: float | None) -> str:
    return "-" if value is None or not base else f"{value / base:.1f}x"


def cpu_rows(steps: dict[int, dict[str, Any]], rates: list[int]) -> list[tuple[str, list[float | None]]]:
    """Per process, its CPU ms per order at each of `rates`; then the service's own processes
    together and the whole machine (every row, "rest of machine" included)."""
    names = list(steps[rates[0]]["cpu"]) if rates else []
    per = {name: [steps[r]["cpu"].get(name, {}).get("ms_per_order") for r in rates] for name in names}
    columns = range(len(rates))
    service: list[float | None] = [sum(per[n][i] or 0.0 for n in names if is_service(n)) for i in columns]
    whole: list[float | None] = [sum(per[n][i] or 0.0 for n in names) for i in columns]
    return [*per.items(), (SERVICE_ROW, service), (MACHINE_ROW, whole)]


def print_tables(summary: dict[str, Any], symbols: list[str]) -> list[str]:
    """Print the rate sweep, summary, overhead, CPU and floor tables and the headline lines; return
    the printed lines."""
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
    out("(every latency from the order's scheduled send time; lag: actual send - scheduled send;")
    out(
        f" an order timed out, unanswered or refused counts as {TIMEOUT_MS:,.0f} ms, the timeout; "
        "the first second of each step is warm-up, not measured)"
    )
    out("(upd: submit -> the exchange's answer on the stream; fill: -> its trades recorded, fees and ids)")
    out(
        f"{'rate/s':>7} {'runs':>4} {'sent/s':>7} {'lag p50':>8} {'lag p99':>8} {'ack p50':>8} "
        f"{'ack p99':>8} {'upd p50':>8} {'upd p99':>8} {'fill p50':>8} {'fill p99':>8} {'lost':>5} "
        f"{'refus':>5}  note"
    )
    for rate, s in steps.items():
        notes = ", ".join(step_notes(rate, s, knee))
        out(
            f"{rate:>7} {s['runs']:>4} {fmt(s['achieved_rate'], 0):>7} {fmt(s['lag_p50_ms'], 2):>8} "
            f"{fmt(s['lag_p99_ms']):>8} {fmt(s['ack_p50_ms']):>8} {fmt(s['ack_p99_ms']):>8} "
            f"{fmt(s['answer_p50_ms']):>8} {fmt(s['answer_p99_ms']):>8} {fmt(s['fill_p50_ms']):>8} "
            f"{fmt(s['fill_p99_ms']):>8} {s['lost']:>5} {s['refused']:>5}  {notes}"
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
        f"(p99 update <= {KNEE_P99_MS:.0f} ms, none lost or refused, client lag p99 <= "
        f"{CLIENT_LAG_MS:.0f} ms, at that rate and every lower one)"
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

    rates = cpu_rates(steps, knee)
    idle = summary["idle_cpu_pct"]
    out(
        "\nCPU per order by process (ms of CPU per order during each sweep step's steady part; "
        f"idle: % of one core over {IDLE_CPU_S:.0f} s with no orders, {len(symbols)} symbol queues)"
    )
    table = cpu_rows(steps, rates)
    name_width = max(len(name) for name, _ in table) + 2
    out(
        f"{'process':<{name_width}}"
        + "".join(f" {f'@{r}/s' + (' knee' if r == knee else ''):>13}" for r in rates)
        + f" {'idle %core':>11}"
    )
    for name, values in table:
        if name == SERVICE_ROW:
            idle_value: float | None = sum(v or 0.0 for k, v in idle.items() if is_service(k))
        elif name == MACHINE_ROW:
            idle_value = sum(v or 0.0 for v in idle.values())
        else:
            idle_value = idle.get(name)
        out(
            f"{name:<{name_width}}"
            + "".join(f" {fmt(v, 3):>13}" for v in values)
            + f" {fmt(idle_value, 1):>11}"
        )
    out(f"({OTHER}: all CPUs' busy time minus the rows above, i.e. anything else running on the machine)")
    print_floor(summary["floor"], out)
    other_idle = idle.get(OTHER) or 0.0
    if other_idle > OTHER_WARN_PCT:
        out(
            f"WARNING: other processes kept {other_idle:.0f}% of a core busy while the stack was idle: "
            "the machine was shared during this run, so latencies and the knee are pessimistic"
        )
    figures = summary["headline"]
    cpu, machine_figures = figures["service_cpu_x_floor"], figures["machine_cpu_low_over_high"]
    out(
        f"\nHeadline (each a ratio or difference within one run, median over runs; service "
        f"{fmt(cpu['service_ms_per_order'], 2)} ms against a floor of {fmt(cpu['floor_ms_per_order'], 2)} ms "
        f"at {cpu['rate']}/s; the machine without {OTHER!r}: "
        f"{fmt(machine_figures['named_processes_value'], 2)} x):"
    )
    for line in headline_lines(figures):
        out(line)
    return lines


def print_floor(floor: dict[int, dict[str, Any]], out: Callable[[str], None]) -> None:
    """The transport floor table (bench/transport_floor.py)."""
    if not floor:
        return
    rates = list(floor)
    names = list(floor[rates[0]]["parts_ms_per_order"])
    out(
        "\nTransport floor: CPU ms per order of the hops any design keeps, with no service logic "
        "(medians over runs)"
    )
    out(f"{'part':<34}" + "".join(f" {f'@{r}/s':>9}" for r in rates))
    for name in names:
        label = name
        if name in ("redis", "nats"):
            label = f"{name} (as the service uses it)"
        out(f"{label:<34}" + "".join(f" {fmt(floor[r]['parts_ms_per_order'][name], 3):>9}" for r in rates))
    out(f"{'total':<34}" + "".join(f" {floor[r]['total_ms_per_order']:>9.3f}" for r in rates))
    cores = floor[rates[0]]["cores"]
    out(
        f"{f'{cores} cores carry at most (orders/s)':<34}"
        + "".join(f" {fmt(floor[r]['max_rate'], 0):>9}" for r in rates)
    )
    out(
        "(gRPC API: a do-nothing OrderService answering CreateOrder and streaming "
        f"{UPDATES_PER_ORDER} updates; exchange hop: signed aiohttp POSTs to the simulator; Redis and NATS: "
        "the sweep step nearest each rate)"
    )


def plot(summary: dict[str, Any], runs: list[RunResult]) -> list[Path]:
    """Write the latency-vs-rate, latency CDF and CPU-per-order PNGs to RESULTS; return their paths."""
    steps: dict[int, dict[str, Any]] = summary["steps"]
    knee = summary["knee_rate"]
    rates = list(steps)
    paths = []
    RESULTS.mkdir(parents=True, exist_ok=True)

    fig, ax = plt.subplots(figsize=(9, 5))
    for key, label, style in (
        ("answer_p50_ms", "submit -> stream update p50", "o-"),
        ("answer_p99_ms", "submit -> stream update p99", "s-"),
        ("fill_p99_ms", "submit -> trades recorded (fees, trade ids) p99", "d:"),
        ("ack_p99_ms", "CreateOrder ack p99", "^--"),
        ("lag_p99_ms", "client send lag p99 (actual - scheduled send)", "x:"),
    ):
        xs = [r for r in rates if steps[r][key] is not None and steps[r][key] > 0]  # log scale
        ax.plot(xs, [steps[r][key] for r in xs], style, label=label)
    behind = [r for r in rates if steps[r]["behind_schedule"]]
    if behind:
        ax.plot(
            behind,
            [steps[r]["answer_p99_ms"] or TIMEOUT_MS for r in behind],
            "o",
            mfc="none",
            mec="orange",
            ms=14,
            label="client behind schedule",
        )
    lost = [r for r in rates if steps[r]["lost"] or steps[r]["refused"]]
    if lost:
        ax.plot(
            lost,
            [steps[r]["answer_p99_ms"] or TIMEOUT_MS for r in lost],
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
    ax.set_title(
        f"Latency from the scheduled send vs rate (median over {len(runs)} runs; "
        f"timeouts count as {LOST_AFTER_S:.0f} s)"
    )
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

    fig, (ax, floor_ax) = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [3, 1]})
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
    ax.set_title("CPU per order by process, over each sweep step's steady part (median over runs)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    _plot_floor(floor_ax, summary["floor"])
    fig.tight_layout()
    paths.append(RESULTS / f"{NAME}_cpu.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def _plot_floor(ax: Any, floor: dict[int, dict[str, Any]]) -> None:
    """Stacked transport floor per rate, against what the machine's cores allow per order at that rate."""
    rates = list(floor)
    if not rates:
        ax.set_visible(False)
        return
    positions = list(range(len(rates)))
    bottoms = [0.0] * len(rates)
    for name in floor[rates[0]]["parts_ms_per_order"]:
        values = [floor[r]["parts_ms_per_order"][name] or 0.0 for r in rates]
        ax.bar(positions, values, bottom=bottoms, label=name, hatch="..")
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    cores = floor[rates[0]]["cores"]
    for x, rate, total in zip(positions, rates, bottoms, strict=True):
        allowed = cores * 1000 / rate
        ax.hlines(allowed, x - 0.45, x + 0.45, colors="red", linestyles="--")
        ax.annotate(
            f"{cores} cores: {allowed:.2f} ms",
            (x, allowed),
            ha="center",
            va="bottom",
            fontsize="small",
            color="red",
        )
        ax.annotate(
            f"{total:.2f} ms", (x, total / 2), ha="center", va="center", fontsize="small", weight="bold"
        )
    ax.set_xticks(positions, [f"{r}/s" for r in rates])
    ax.set_ylim(0, max([*bottoms, *(cores * 1000 / r for r in rates)]) * 1.15)
    ax.set_ylabel("CPU ms per order")
    ax.set_title("Transport floor (no service logic)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), fontsize="x-small")


def write_results(
    summary: dict[str, Any], runs: list[RunResult], table: list[str], notes: dict[str, Any]
) -> Path:
    """Write RESULTS/throughput.json: the machine's description, the summary, the printed table,
    each run's numbers and its samples at the low and the CPU rate, with `notes` on how the bench
    ran; return its path."""
    kept = sorted(
        {r for r in (closest(summary["steps"], LOW_RATE), closest(summary["steps"], CPU_RATE)) if r}
    )
    return write_json(
        NAME,
        {
            "bench": NAME,
            "title": "Throughput, latency under load and CPU per order (simulator exchange)",
            "machine": machine(),
            "notes": notes,
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
                    "floor_ms_per_order": {str(k): v for k, v in r.floor.items()},
                    "samples_ms": {str(rate): rounded(r.samples.get(rate, {})) for rate in kept},
                }
                for r in runs
            ],
        },
    )


def rounded(samples: dict[str, list[float]]) -> dict[str, list[float]]:
    """Samples to 0.01 ms (10 us): finer than any figure the bench prints, and a smaller file."""
    return {key: [round(x, 2) for x in values] for key, values in samples.items()}


def publish(source: Path = RESULTS, target: Path = PUBLISHED) -> list[Path]:
    """Copy throughput.json and its PNGs from `source` to `target` (the committed copies under
    docs/performance/ that the README's figures come from); return the copies' paths."""
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in (f"{NAME}.json", *(f"{NAME}_{plot}.png" for plot in PLOTS)):
        if not (source / name).exists():
            raise SystemExit(f"nothing to publish: {source / name} is missing (run the bench first)")
        copied.append(Path(shutil.copy2(source / name, target / name)))
    return copied
