"""The supervisor behind `up`: restarts with backoff, appends to logs, stops every pid it started.

Real short-lived child processes; the clock is a fake one the tests move by hand, so
delays are checked exactly and nothing waits for them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from order_execution.launcher.processes import ManagedProcess
from order_execution.launcher.supervisor import Backoff, Supervisor

EXIT_3 = "print('run', flush=True); import sys; sys.exit(3)"
SLEEP = "import time; time.sleep(60)"
# Leaves a child in its process group (as Dramatiq's parent does), prints its pid, then exits.
ORPHAN_AND_EXIT = (
    "import subprocess, sys; "
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
    "print(child.pid, flush=True); sys.exit(1)"
)
SLEEP_WITH_CHILD = (
    "import subprocess, sys, time; "
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
    "print(child.pid, flush=True); time.sleep(60)"
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def reports() -> list[str]:
    return []


@pytest.fixture
def supervisor(clock: FakeClock, reports: list[str]) -> Iterator[Supervisor]:
    supervisor = Supervisor(
        backoff=Backoff(first_s=0.5, max_s=2.0, stable_s=60.0), clock=clock, report=reports.append
    )
    try:
        yield supervisor
    finally:
        supervisor.stop()


def python(name: str, code: str, log_dir: Path) -> ManagedProcess:
    return ManagedProcess(name, [sys.executable, "-c", code], log_dir=log_dir)


def wait_exit(process: ManagedProcess) -> None:
    assert process.process is not None
    process.process.wait(timeout=10)


def wait_printed_pid(process: ManagedProcess) -> int:
    """The first line the process printed: the pid of the child it started."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        first = process.log_path.read_text().split("\n", 1)
        if len(first) == 2:
            return int(first[0])
        time.sleep(0.02)
    raise AssertionError(f"{process.name} printed no pid")


def gone(pid: int, timeout_s: float = 3.0) -> bool:
    """Whether `pid` has exited (a zombie waiting for its reaper counts as exited)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        except OSError:  # no /proc: ask the kernel instead
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            state = "R"
        if state == "Z":
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def test_restarts_with_doubling_capped_delay_and_appends_to_the_log(
    supervisor: Supervisor, clock: FakeClock, reports: list[str], tmp_path: Path
) -> None:
    crasher = supervisor.start(python("crasher", EXIT_3, tmp_path))
    expected_delays = [0.5, 1.0, 2.0, 2.0]  # doubling from first_s, capped at max_s
    for restart, delay in enumerate(expected_delays, start=1):
        wait_exit(crasher)
        pid = crasher.pid
        supervisor.poll()
        assert reports[-1].startswith(
            f"crasher exited (code 3); restarting in {delay:.1f} s (restart #{restart}); last log lines: run"
        )
        assert "\n" not in reports[-1]

        clock.advance(delay - 0.1)
        supervisor.poll()
        assert crasher.pid == pid, "restarted before its delay was over"
        clock.advance(0.1)
        supervisor.poll()
        assert crasher.pid != pid

    wait_exit(crasher)
    assert len(reports) == len(expected_delays)
    assert supervisor.restarts("crasher") == 4
    assert len(supervisor.started_pids) == 5
    log = crasher.log_path.read_text()
    assert log.count("run\n") == 5, log  # every run's output kept: restarts append
    assert "--- restart #4 ---" in log


def test_a_run_that_lasted_resets_the_delay(
    supervisor: Supervisor, clock: FakeClock, reports: list[str], tmp_path: Path
) -> None:
    crasher = supervisor.start(python("crasher", EXIT_3, tmp_path))
    for delay in (0.5, 1.0):
        wait_exit(crasher)
        supervisor.poll()
        clock.advance(delay)
        supervisor.poll()
    wait_exit(crasher)
    clock.advance(60.0)  # this run counts as healthy: it lasted stable_s
    supervisor.poll()
    assert "restarting in 0.5 s (restart #3)" in reports[-1]


def test_a_running_process_is_left_alone(
    supervisor: Supervisor, clock: FakeClock, reports: list[str], tmp_path: Path
) -> None:
    sleeper = supervisor.start(python("sleeper", SLEEP, tmp_path))
    pid = sleeper.pid
    for _ in range(3):
        clock.advance(100.0)
        supervisor.poll()
    assert sleeper.alive()
    assert sleeper.pid == pid
    assert reports == []


def test_a_dead_leader_s_group_is_killed_before_the_restart(
    supervisor: Supervisor, reports: list[str], tmp_path: Path
) -> None:
    leader = supervisor.start(python("worker", ORPHAN_AND_EXIT, tmp_path))
    orphan = wait_printed_pid(leader)
    try:
        wait_exit(leader)
        assert not gone(orphan, timeout_s=0), "the orphan should outlive its parent until the supervisor acts"
        supervisor.poll()
        assert gone(orphan), "the dead worker's child would go on consuming next to its replacement"
        assert "worker exited (code 1)" in reports[-1]
    finally:
        kill_all([orphan])


def test_stop_kills_every_pid_it_started_and_restarts_nothing(
    supervisor: Supervisor, clock: FakeClock, tmp_path: Path
) -> None:
    crasher = supervisor.start(python("crasher", EXIT_3, tmp_path))
    parent = supervisor.start(python("parent", SLEEP_WITH_CHILD, tmp_path))
    supervisor.start(python("sleeper", SLEEP, tmp_path))
    grandchild = wait_printed_pid(parent)
    for _ in range(2):
        wait_exit(crasher)
        supervisor.poll()
        clock.advance(10.0)
        supervisor.poll()
    wait_exit(crasher)
    supervisor.poll()  # a restart is now pending; stop() must cancel it
    started = [*supervisor.started_pids, grandchild]
    try:
        supervisor.stop()
        clock.advance(100.0)
        supervisor.poll()
        assert len(supervisor.started_pids) == 5  # 3 first runs + 2 restarts, nothing after stop()
        still_running = [pid for pid in started if not gone(pid)]
        assert still_running == []
    finally:
        kill_all(started)


def test_run_loops_until_stopping_is_set(tmp_path: Path) -> None:
    reports: list[str] = []
    supervisor = Supervisor(backoff=Backoff(first_s=0.1, max_s=0.2), report=reports.append)
    stopping = threading.Event()
    try:
        supervisor.start(python("crasher", EXIT_3, tmp_path))
        loop = threading.Thread(target=supervisor.run, args=(stopping, 0.02))
        loop.start()
        deadline = time.monotonic() + 10
        while supervisor.restarts("crasher") < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        stopping.set()
        loop.join(timeout=5)
        assert not loop.is_alive()
        assert supervisor.restarts("crasher") >= 3
        assert [line.split(";")[1] for line in reports[:3]] == [
            " restarting in 0.1 s (restart #1)",
            " restarting in 0.2 s (restart #2)",
            " restarting in 0.2 s (restart #3)",
        ]
    finally:
        stopping.set()
        supervisor.stop()
    assert all(gone(pid) for pid in supervisor.started_pids)


def test_a_restart_that_cannot_start_is_retried_with_backoff(
    supervisor: Supervisor, clock: FakeClock, reports: list[str], tmp_path: Path
) -> None:
    server = tmp_path / "server"
    script = "#!/bin/sh\necho run\nexit 3\n"
    server.write_text(script)
    server.chmod(0o755)
    process = supervisor.start(ManagedProcess("server", [str(server)], log_dir=tmp_path))
    wait_exit(process)
    server.unlink()  # the binary disappears (e.g. an upgrade in progress)
    supervisor.poll()
    clock.advance(0.5)
    supervisor.poll()
    assert reports[-1].startswith("server could not be restarted (")
    assert "restarting in 1.0 s (restart #2)" in reports[-1]
    server.write_text(script)
    server.chmod(0o755)
    clock.advance(1.0)
    supervisor.poll()
    wait_exit(process)
    assert process.returncode == 3
    assert len(supervisor.started_pids) == 2


def test_log_tail_reads_the_end_of_a_large_log(tmp_path: Path) -> None:
    process = ManagedProcess("big", [sys.executable, "-c", "pass"], log_dir=tmp_path)
    process.log_path.write_text("x" * 200_000 + "\nsecond to last\nlast\n")
    assert process.log_tail(2) == "second to last\nlast"


def test_start_truncates_unless_appending(tmp_path: Path) -> None:
    process = ManagedProcess("p", [sys.executable, "-c", "print('run')"], log_dir=tmp_path)
    for append in (False, True, True, False, True):
        process.start(append=append)
        assert process.process is not None
        process.process.wait(timeout=10)
    assert process.log_path.read_text() == "run\nrun\n"


def test_stop_never_signals_a_reaped_group_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    process = ManagedProcess("p", [sys.executable, "-c", "pass"], log_dir=tmp_path).start()
    assert process.process is not None
    process.process.wait(timeout=10)
    calls: list[int] = []
    real_killpg = os.killpg

    def recording_killpg(pgid: int, signum: int) -> None:
        calls.append(pgid)
        with contextlib.suppress(ProcessLookupError):
            real_killpg(pgid, signum)

    monkeypatch.setattr(os, "killpg", recording_killpg)
    process.stop()
    process.stop()  # the group id may belong to someone else by now
    assert calls == [process.pid]


def test_a_killed_process_is_reported_with_the_signal(
    supervisor: Supervisor, reports: list[str], tmp_path: Path
) -> None:
    sleeper = supervisor.start(python("worker", SLEEP, tmp_path))
    os.kill(sleeper.pid, signal.SIGKILL)
    wait_exit(sleeper)
    supervisor.poll()
    assert reports[-1] == "worker exited (code -9); restarting in 0.5 s (restart #1); last log lines: (none)"


def test_the_report_stays_one_short_line_whatever_the_log_holds(
    supervisor: Supervisor, reports: list[str], tmp_path: Path
) -> None:
    noisy = supervisor.start(python("noisy", "print('a' * 5000); print('b'); raise SystemExit(4)", tmp_path))
    wait_exit(noisy)
    supervisor.poll()
    assert "\n" not in reports[-1]
    assert len(reports[-1]) < 400
    assert reports[-1].endswith("last log lines: " + "a" * 197 + "... | b")
