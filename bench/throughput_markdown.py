"""The README's throughput tables, rendered as Markdown from a results file of bench/throughput.py.

`python bench/throughput.py --render-readme docs/performance/throughput.json` prints them, so the
README's figures are regenerated from a committed file rather than typed in: the machine and
commit they were measured on, the rate sweep with the client's lag, CPU per order per process at
the low and the CPU rate with idle CPU per process, the transport floor, the burst and idle
figures, the baselines and the headline lines.
"""

from __future__ import annotations

from typing import Any

from bench.cpu_meter import OTHER
from bench.load_phases import is_service
from bench.throughput_summary import KNEE_P99_MS, cpu_rates, headline_lines

SERVICE_ROW = "service (gateway + workers + listener)"
MACHINE_ROW = "whole machine"
OTHER_WARN_PCT = 10.0  # "rest of machine" CPU while idle above which the run is flagged as disturbed


def num(value: float | None, digits: int | None = None) -> str:
    """A latency or CPU figure for a table: '-' when absent; with `digits` decimals if given, else
    1 decimal under 100, none above, with thousands separated."""
    if value is None or value != value:  # None or NaN
        return "-"
    if digits is not None:
        return f"{value:,.{digits}f}"
    return f"{value:,.1f}" if abs(value) < 100 else f"{value:,.0f}"


def pair(p50: float | None, p99: float | None) -> str:
    return f"{num(p50)} / {num(p99)} ms"


def step_notes(rate: int, step: dict[str, Any], knee: int | None) -> list[str]:
    """Why a merged sweep step is the knee or past it: the notes of its table row."""
    notes = []
    if rate == knee:
        notes.append("knee")
    if step["behind_schedule"]:
        notes.append(f"client behind schedule in {step['behind_schedule']}/{step['runs']} runs")
    if step["answer_p99_ms"] is not None and step["answer_p99_ms"] > KNEE_P99_MS:
        notes.append(f"p99 > {KNEE_P99_MS:.0f} ms")
    if step["lost"] or step["refused"]:
        notes.append("orders lost or refused")
    return notes


def _int_keys(table: dict[str, Any]) -> dict[int, Any]:
    return {int(k): v for k, v in table.items()}


def describe(results: dict[str, Any], source: str) -> str:
    """One sentence: when, on what and how the figures in `results` were measured."""
    m = results.get("machine", {})
    notes = results.get("notes", {})
    commit = m.get("git_commit") or "unknown"
    if commit != "unknown":
        commit = commit[:10] + (" with uncommitted changes" if m.get("git_dirty") else "")
    symbols = notes.get("symbols") or []
    runs = notes.get("runs", "?")
    return (
        f"Measured {m.get('date', 'at an unrecorded date')} on {m.get('cpu_model', 'an unrecorded CPU')}, "
        f"{m.get('cpus', '?')} cores, Python {m.get('python', '?')}, kernel {m.get('kernel', '?')}, "
        f"commit {commit}: {'one run' if runs == 1 else f'medians of {runs} runs'}, {len(symbols)} symbols, "
        f"{notes.get('step_s', '?')} s per rate (the first {notes.get('warmup_s', '?')} s not measured), "
        f"auth {'on' if notes.get('auth') else 'off'} (`{source}`)."
    )


def sweep_table(summary: dict[str, Any]) -> list[str]:
    """The rate sweep: sent rate, the client's lag, CreateOrder, update and trades-recorded
    latencies from the scheduled send, lost and refused, and the knee or why a rate is past it."""
    steps = _int_keys(summary["steps"])
    knee = summary.get("knee_rate")
    lines = [
        "| rate | sent | client lag p50 / p99 | CreateOrder p50 / p99 | submit → update p50 / p99 "
        "| submit → trades recorded p50 / p99 | lost / refused | |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rate, s in sorted(steps.items()):
        notes = step_notes(rate, s, knee)
        lines.append(
            f"| {rate}/s | {num(s.get('achieved_rate'), 0)}/s "
            f"| {num(s.get('lag_p50_ms'), 2)} / {num(s.get('lag_p99_ms'), 1)} ms "
            f"| {pair(s.get('ack_p50_ms'), s.get('ack_p99_ms'))} "
            f"| {pair(s.get('answer_p50_ms'), s.get('answer_p99_ms'))} "
            f"| {pair(s.get('fill_p50_ms'), s.get('fill_p99_ms'))} "
            f"| {s['lost']} / {s['refused']} | {', '.join(notes)} |"
        )
    return lines


def cpu_table(summary: dict[str, Any]) -> list[str]:
    """CPU ms per order per process at the low rate and the CPU rate (and the knee if another),
    with the service's processes together and the whole machine, and idle % of a core per process."""
    steps = _int_keys(summary["steps"])
    knee = summary.get("knee_rate")
    rates = cpu_rates(steps, knee)
    if not rates:
        return []
    idle: dict[str, float | None] = summary.get("idle_cpu_pct", {})
    names = list(steps[rates[0]]["cpu"])
    lines = [
        "| CPU ms per order | "
        + " | ".join(f"{r}/s" + (" (knee)" if r == knee else "") for r in rates)
        + " | idle, % of a core |",
        "|---|" + "---|" * (len(rates) + 1),
    ]
    per = {n: [steps[r]["cpu"].get(n, {}).get("ms_per_order") for r in rates] for n in names}
    for name in names:
        lines.append(
            f"| {name} | " + " | ".join(num(v, 2) for v in per[name]) + f" | {num(idle.get(name), 1)} |"
        )
    totals = (
        (SERVICE_ROW, [n for n in names if is_service(n)]),
        (MACHINE_ROW, names),
    )
    for label, members in totals:
        values = [sum(per[n][i] or 0.0 for n in members) for i in range(len(rates))]
        idle_sum = sum(idle.get(n) or 0.0 for n in members)
        lines.append(
            f"| **{label}** | " + " | ".join(f"**{num(v, 2)}**" for v in values) + f" | {num(idle_sum, 1)} |"
        )
    return lines


def floor_table(summary: dict[str, Any]) -> list[str]:
    """The transport floor's parts and total per floor rate, and the rate the cores could carry."""
    floor = _int_keys(summary.get("floor", {}))
    if not floor:
        return []
    rates = sorted(floor)
    parts = list(floor[rates[0]]["parts_ms_per_order"])
    lines = [
        "| transport floor, CPU ms per order | " + " | ".join(f"{r}/s" for r in rates) + " |",
        "|---|" + "---|" * len(rates),
    ]
    for part in parts:
        label = f"{part} (as the service uses it)" if part in ("redis", "nats") else part
        lines.append(
            f"| {label} | " + " | ".join(num(floor[r]["parts_ms_per_order"][part], 2) for r in rates) + " |"
        )
    lines.append(
        "| **total** | " + " | ".join(f"**{num(floor[r]['total_ms_per_order'], 2)}**" for r in rates) + " |"
    )
    cores = floor[rates[0]].get("cores", "?")
    lines.append(
        f"| {cores} cores carry at most | "
        + " | ".join(f"{num(floor[r]['max_rate'], 0)}/s" for r in rates)
        + " |"
    )
    return lines


def other_table(summary: dict[str, Any]) -> list[str]:
    """Burst, first order after idle and the two baselines straight to the simulator."""
    b, a = summary["burst"], summary["after_idle"]
    return [
        "| | |",
        "|---|---|",
        f"| burst of 300 orders: first submit → last exchange answer | "
        f"{num(b.get('first_submit_to_last_answer_ms'))} ms (lost {b['lost']}, refused {b['refused']}) |",
        f"| first order after 5 s idle: submit → update | {num(a['answer']['p50_ms'])} ms p50 "
        f"(CreateOrder {num(a['ack']['p50_ms'])} ms) |",
        f"| ccxt `create_order` straight to the simulator | {num(summary['ccxt']['p50_ms'], 2)} ms p50 "
        f"(signed httpx POST {num(summary['httpx']['p50_ms'], 2)} ms) |",
    ]


def disturbance(summary: dict[str, Any]) -> list[str]:
    """A warning when something outside the bench kept the machine busy while the stack was idle."""
    other = summary.get("idle_cpu_pct", {}).get(OTHER) or 0.0
    if other <= OTHER_WARN_PCT:
        return []
    return [
        f"Other processes kept {other:.0f} % of a core busy while the stack was idle: the machine was "
        "shared during this run, so its latencies, knee and low-rate CPU per order are pessimistic."
    ]


def render_markdown(results: dict[str, Any], source: str) -> str:
    """The README's throughput tables from `results` (a loaded throughput.json; `source` names it)."""
    summary = results["summary"]
    blocks = [
        [describe(results, source)],
        disturbance(summary),
        sweep_table(summary),
        [
            "Latencies run from each order's scheduled send time (open loop), so a client that falls "
            "behind shows in them; lag is actual send minus scheduled send. An order timed out, "
            "unanswered or refused counts as the timeout (10 s). The knee is the highest rate up to "
            "which p99 submit → update stays within 50 ms with no order lost or refused and the "
            "client on schedule."
        ],
        cpu_table(summary),
        floor_table(summary),
        other_table(summary),
        ["```", *headline_lines(summary["headline"]), "```"],
    ]
    return "\n\n".join("\n".join(block) for block in blocks if block) + "\n"
