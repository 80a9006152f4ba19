"""The throughput bench's pure parts: latencies from the schedule with timeouts counted, the client's
lag, the knee, the headline figures and lines, the README rendering and the results' traceability
(bench/load_session.py, load_phases.py, throughput_summary.py, throughput_markdown.py, report.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import report, throughput_report
from bench.cpu_meter import OTHER
from bench.load_phases import CLIENT_LAG_MS, RunResult, behind_schedule, is_service
from bench.load_session import LOST_AFTER_S, TIMEOUT_MS, Order, lag_stats, latencies, stats
from bench.throughput_markdown import render_markdown
from bench.throughput_summary import (
    KNEE_P99_MS,
    combine_steps,
    find_knee,
    headline,
    headline_lines,
    summarize,
)
from order_execution.proto import order_pb2 as pb

# ---------------------------------------------------------------- orders and their latencies


def order(
    scheduled: float | None = 100.0,
    submit: float = 100.0,
    ack: float | None = None,
    answer: float | None = None,
    final: float | None = None,
    fill: float | None = None,
    state: int = pb.FILLED,
    error: str = "",
) -> Order:
    made = Order("c", "BTCUSDT", pb.CreateOrderRequest(), scheduled=scheduled, submit=submit)
    made.ack, made.answer, made.final, made.fill = ack, answer, final, fill
    made.state, made.error = state, error
    return made


def test_latencies_run_from_the_scheduled_send_not_the_actual_one() -> None:
    late = order(scheduled=100.0, submit=100.050, ack=100.052, answer=100.060, final=100.060, fill=100.070)
    lat = latencies([late])
    assert lat["ack"] == [pytest.approx(52.0)]
    assert lat["answer"] == [pytest.approx(60.0)]
    assert lat["fill"] == [pytest.approx(70.0)]
    assert late.lag_ms() == pytest.approx(50.0)


def test_an_early_send_is_timed_from_the_actual_send_so_aiming_early_never_shortens_a_latency() -> None:
    early = order(scheduled=100.0, submit=99.9996, answer=100.0096)
    assert latencies([early])["answer"] == [pytest.approx(10.0)]
    assert early.lag_ms() == pytest.approx(-0.4)


def test_an_unscheduled_order_is_timed_from_its_send_with_no_lag() -> None:
    single = order(scheduled=None, submit=5.0, answer=5.008)
    assert latencies([single])["answer"] == [pytest.approx(8.0)]
    assert single.lag_ms() == 0.0


def test_nothing_is_dropped_a_timeout_or_a_refusal_counts_as_the_timeout() -> None:
    fine = order(ack=100.002, answer=100.010, final=100.010, fill=100.012)
    unanswered = order(ack=100.003)  # acknowledged, then nothing on the stream
    too_late = order(ack=100.002, answer=100.0 + LOST_AFTER_S + 2, final=100.0 + LOST_AFTER_S + 2)
    refused = order(error="RESOURCE_EXHAUSTED", state=0)
    lat = latencies([fine, unanswered, too_late, refused])
    assert len(lat["answer"]) == 4
    assert sorted(lat["answer"]) == [pytest.approx(10.0), TIMEOUT_MS, TIMEOUT_MS, TIMEOUT_MS]
    assert lat["ack"].count(TIMEOUT_MS) == 1  # only the refused one has no ack
    figures = stats([fine, unanswered, too_late, refused])
    assert figures["lost"] == 2 and figures["refused"] == 1
    assert figures["answer_p99_ms"] == TIMEOUT_MS  # the percentile shows the failures


def test_an_order_that_ended_unfilled_has_no_trades_to_wait_for() -> None:
    expired = order(ack=100.002, answer=100.010, final=100.010, state=pb.EXPIRED)
    assert latencies([expired])["fill"] == []
    assert latencies([expired])["answer"] == [pytest.approx(10.0)]


def test_lag_stats_give_the_clients_send_lag_percentiles() -> None:
    orders = [order(scheduled=100.0, submit=100.0 + lag / 1000) for lag in range(100)]  # 0..99 ms
    lag = lag_stats(orders)
    assert lag["lag_p50_ms"] == pytest.approx(50.0, abs=1)
    assert lag["lag_p99_ms"] == pytest.approx(98.0, abs=1)
    assert lag["lag_max_ms"] == pytest.approx(99.0)


@pytest.mark.parametrize(
    ("lag_p99", "achieved", "behind"),
    [(1.0, 200.0, False), (CLIENT_LAG_MS + 1, 200.0, True), (1.0, 150.0, True), (None, 200.0, False)],
)
def test_a_step_is_behind_schedule_when_the_client_lagged_or_sent_too_few(
    lag_p99: float | None, achieved: float, behind: bool
) -> None:
    assert behind_schedule({"rate": 200, "lag_p99_ms": lag_p99, "achieved_rate": achieved}) is behind


# ---------------------------------------------------------------- steps, knee and headline

PROCESSES = (
    "simulator",
    "worker-1",
    "worker-2",
    "listener",
    "gateway",
    "redis",
    "nats",
    "bench client",
    OTHER,
)


def cpu(**ms: float) -> dict[str, dict[str, float]]:
    return {
        name: {"ms_per_order": ms.get(name.replace("-", "_").replace(" ", "_"), 0.0), "pct_core": 1.0}
        for name in PROCESSES
    }


def step(
    rate: int,
    p99: float = 10.0,
    p50: float = 5.0,
    lost: int = 0,
    refused: int = 0,
    behind: bool = False,
    cpu_ms: dict[str, dict[str, float]] | None = None,
) -> dict[str, Any]:
    return {
        "rate": rate,
        "orders": rate * 10,
        "measured_orders": rate * 9,
        "warmup_orders": rate,
        "achieved_rate": float(rate),
        "lag_p50_ms": 0.1,
        "lag_p99_ms": 30.0 if behind else 0.5,
        "lag_max_ms": 1.0,
        "ack_p50_ms": 2.0,
        "ack_p99_ms": 4.0,
        "answer_p50_ms": p50,
        "answer_p99_ms": p99,
        "final_p50_ms": p50,
        "final_p99_ms": p99,
        "fill_p50_ms": p50 + 1,
        "fill_p99_ms": p99 + 1,
        "lost": lost,
        "refused": refused,
        "refused_codes": [],
        "not_filled": 0,
        "lost_orders": [],
        "window_s": 9.0,
        "behind_schedule": behind,
        "cpu": cpu_ms or cpu(gateway=2.0, worker_1=1.0, worker_2=1.0, listener=2.0, redis=0.5, nats=0.25),
    }


def run(sweep: list[dict[str, Any]], ccxt_p50: float = 0.5, api: float = 1.0, hop: float = 0.5) -> RunResult:
    burst_cpu = cpu()
    return RunResult(
        sweep=sweep,
        burst={
            "first_submit_to_last_answer_ms": 600.0,
            "first_submit_to_last_final_ms": 610.0,
            "first_submit_to_last_fill_ms": 650.0,
            "ack_p50_ms": 300.0,
            "ack_p99_ms": 400.0,
            "answer_p50_ms": 400.0,
            "answer_p99_ms": 600.0,
            "lost": 0,
            "refused": 0,
            "cpu": burst_cpu,
        },
        idle_cpu_pct={name: 0.5 for name in PROCESSES},
        after_idle={"ack": [3.0], "answer": [7.0], "final": [7.0], "fill": [8.0]},
        httpx_ms=[1.0] * 10,
        ccxt_ms=[ccxt_p50] * 10,
        samples={},
        floor={
            200: {
                "api": {"server": api / 2, "client": api / 2},
                "exchange": {"simulator": hop / 2, "client": hop / 2},
            },
            600: {"api": {"server": 0.4, "client": 0.4}, "exchange": {"simulator": 0.2, "client": 0.2}},
        },
    )


def merged(*steps: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return combine_steps([run(list(steps))])


def test_the_knee_is_the_last_rate_before_the_first_that_fails() -> None:
    assert find_knee(merged(step(50), step(100), step(200), step(400, p99=KNEE_P99_MS + 1))) == 200


def test_a_rate_where_the_client_fell_behind_is_past_the_knee() -> None:
    assert find_knee(merged(step(50), step(100), step(200, behind=True), step(400))) == 100


def test_a_lost_or_refused_order_puts_the_rate_past_the_knee() -> None:
    assert find_knee(merged(step(50), step(100, lost=1))) == 50
    assert find_knee(merged(step(50), step(100, refused=1))) == 50


def test_a_passing_rate_above_a_failing_one_does_not_move_the_knee() -> None:
    assert find_knee(merged(step(50), step(100, p99=80.0), step(200))) == 50
    assert find_knee(merged(step(50, p99=80.0), step(100))) is None


def test_a_step_that_fell_behind_in_any_run_is_past_the_knee() -> None:
    steps = combine_steps([run([step(50), step(100)]), run([step(50), step(100, behind=True)])])
    assert steps[100]["behind_schedule"] == 1 and steps[100]["runs"] == 2
    assert find_knee(steps) == 50


def test_the_service_is_gateway_workers_and_listeners() -> None:
    assert [p for p in PROCESSES if is_service(p)] == ["worker-1", "worker-2", "listener", "gateway"]


def test_headline_ratios_are_taken_within_each_run_then_the_median() -> None:
    # Run A: service 6 ms at 200/s against a floor of 1 + 0.5 + redis 0.5 + nats 0.25 = 2.25 ms.
    # Run B: the service costs twice as much but so does its floor: the ratio is the same.
    runs = [
        run([step(50, p50=8.0), step(200)], ccxt_p50=0.5),
        run(
            [
                step(
                    50, p50=9.0, cpu_ms=cpu(gateway=8.0, worker_1=2.0, worker_2=2.0, listener=4.0, redis=2.0)
                ),
                step(
                    200,
                    cpu_ms=cpu(gateway=4.0, worker_1=2.0, worker_2=2.0, listener=4.0, redis=1.0, nats=0.5),
                ),
            ],
            ccxt_p50=1.0,
            api=2.0,
            hop=1.0,
        ),
        run([step(50, p50=10.0), step(200)], ccxt_p50=0.5),
    ]
    figures = headline(runs)
    assert figures["service_cpu_x_floor"]["runs"] == [pytest.approx(6 / 2.25)] * 3
    assert figures["service_cpu_x_floor"]["value"] == pytest.approx(6 / 2.25)
    assert figures["update_p50_minus_ccxt_ms"]["runs"] == [
        pytest.approx(7.5),
        pytest.approx(8.0),
        pytest.approx(9.5),
    ]
    assert figures["update_p50_minus_ccxt_ms"]["value"] == pytest.approx(8.0)
    # whole machine at 50/s over 200/s: run A 6.75 / 6.75; run B 18 / 13.5
    assert figures["machine_cpu_low_over_high"]["runs"] == [
        pytest.approx(1.0),
        pytest.approx(18 / 13.5),
        pytest.approx(1.0),
    ]
    assert headline_lines(figures) == [
        "service CPU per order at 200/s = 2.67 x transport floor",
        "submit -> update p50 at 50/s = ccxt + 8.00 ms",
        "whole machine CPU per order at 50/s = 1.00 x that at 200/s",
    ]


def test_the_whole_machine_includes_the_rest_of_the_machine_and_says_what_it_is_without() -> None:
    busy = cpu(gateway=2.0, rest_of_machine=6.0)
    figures = headline(
        [run([step(50, cpu_ms=busy), step(200, cpu_ms=cpu(gateway=2.0, rest_of_machine=1.0))])]
    )
    machine = figures["machine_cpu_low_over_high"]
    assert machine["value"] == pytest.approx(8.0 / 3.0)
    assert machine["named_processes_value"] == pytest.approx(1.0)


def test_headline_lines_say_n_a_when_the_sweep_never_reached_a_rate() -> None:
    figures = headline([run([step(50, p50=3.0)], ccxt_p50=4.0)])
    assert headline_lines(figures) == [
        "service CPU per order at 200/s = n/a x transport floor",
        "submit -> update p50 at 50/s = ccxt - 1.00 ms",
        "whole machine CPU per order at 50/s = n/a x that at 200/s",
    ]


# ---------------------------------------------------------------- results file and README


def results_file(tmp_path: Path) -> dict[str, Any]:
    """A results payload as throughput.py writes it, through JSON (string keys, as committed)."""
    runs = [
        run([step(50, p50=8.0), step(100), step(200), step(400, p99=900.0, behind=True)]) for _ in range(3)
    ]
    summary = summarize(runs)
    payload = {
        "machine": {
            "cpu_model": "AMD EPYC",
            "cpus": 2,
            "python": "3.11.7",
            "kernel": "6.1",
            "date": "2026-12-07T10:00:00+00:00",
            "git_commit": "0123456789abcdef",
            "git_dirty": False,
        },
        "notes": {"runs": 3, "symbols": ["BTCUSDT"] * 20, "step_s": 10.0, "warmup_s": 1.0, "auth": True},
        "summary": {**summary, "steps": {str(k): v for k, v in summary["steps"].items()}},
    }
    path = tmp_path / "throughput.json"
    path.write_text(json.dumps(payload))
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def test_the_readme_tables_render_from_a_results_file(tmp_path: Path) -> None:
    text = render_markdown(results_file(tmp_path), "docs/performance/throughput.json")
    assert "commit 0123456789: medians of 3 runs, 20 symbols, 10.0 s per rate" in text
    assert "auth on (`docs/performance/throughput.json`)" in text
    assert "| rate | sent | client lag p50 / p99 |" in text
    assert (
        "| 200/s | 200/s | 0.10 / 0.5 ms | 2.0 / 4.0 ms | 5.0 / 10.0 ms | 6.0 / 11.0 ms | 0 / 0 | knee |"
        in text
    )
    assert "client behind schedule in 3/3 runs, p99 > 50 ms" in text
    assert "| gateway | 2.00 | 2.00 | 0.5 |" in text  # per process, at 50/s and 200/s, idle
    assert "| worker-1 | 1.00 | 1.00 | 0.5 |" in text and "| worker-2 | 1.00 | 1.00 | 0.5 |" in text
    assert "| **service (gateway + workers + listener)** | **6.00** | **6.00** | 2.0 |" in text
    assert "| **total** | **2.25** |" in text  # the transport floor at 200/s
    lines = text.splitlines()
    for line in (
        "service CPU per order at 200/s = 2.67 x transport floor",
        "submit -> update p50 at 50/s = ccxt + 7.50 ms",
        "whole machine CPU per order at 50/s = 1.00 x that at 200/s",
    ):
        assert line in lines  # each on a line of its own


def test_a_run_on_a_busy_machine_says_so_in_the_readme(tmp_path: Path) -> None:
    quiet = results_file(tmp_path)
    assert "machine was shared" not in render_markdown(quiet, "x.json")
    quiet["summary"]["idle_cpu_pct"][OTHER] = 40.0
    assert "Other processes kept 40 % of a core busy" in render_markdown(quiet, "x.json")


def test_the_printed_report_ends_with_the_headline_lines_and_gives_idle_cpu_per_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = [run([step(50, p50=8.0), step(200)])]
    lines = throughput_report.print_tables(summarize(runs), ["BTCUSDT"])
    assert lines[-3:] == [
        "service CPU per order at 200/s = 2.67 x transport floor",
        "submit -> update p50 at 50/s = ccxt + 7.50 ms",
        "whole machine CPU per order at 50/s = 1.00 x that at 200/s",
    ]
    worker_rows = [line for line in lines if line.startswith("worker-")]
    assert len(worker_rows) == 2 and all(row.split()[-1] == "0.5" for row in worker_rows)
    assert any(line.strip().startswith("Transport floor") for line in lines)
    capsys.readouterr()


def test_results_say_what_machine_and_commit_they_were_measured_on() -> None:
    described = report.machine()
    for key in ("cpu_model", "cpus", "python", "kernel", "date", "git_commit", "git_dirty"):
        assert key in described
    assert described["cpus"] and described["date"]


def test_results_keep_each_array_of_samples_on_one_line_and_stay_the_same_json() -> None:
    payload = {
        "samples": [1.25, -2.0, 3e-05, float("nan")],
        "steps": [{"rate": 50, "cpu": [1, 2]}],
        "name": "x",
    }
    text = report.dumps(payload)
    assert '"samples": [1.25, -2.0, 3e-05, NaN]' in text
    assert '"cpu": [1, 2]' in text
    again = json.loads(text)
    assert again["samples"][:3] == [1.25, -2.0, 3e-05] and again["steps"] == payload["steps"]
    assert throughput_report.rounded({"ack": [1.23456, 2.0]}) == {"ack": [1.23, 2.0]}


def test_publish_copies_the_results_and_plots(tmp_path: Path) -> None:
    source, target = tmp_path / "results", tmp_path / "docs" / "performance"
    source.mkdir()
    names = ["throughput.json", "throughput_latency.png", "throughput_distribution.png", "throughput_cpu.png"]
    for name in names:
        (source / name).write_text(name)
    copied = throughput_report.publish(source, target)
    assert sorted(p.name for p in copied) == sorted(names)
    assert (target / "throughput.json").read_text() == "throughput.json"


def test_publish_refuses_when_a_file_is_missing(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="nothing to publish"):
        throughput_report.publish(tmp_path, tmp_path / "out")
