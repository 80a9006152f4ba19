"""Keep child processes running: restart one that dies, waiting longer after each quick failure.

`up` runs one Supervisor for everything it starts. `poll()` is one step (notice deaths,
restart what is due) so tests can drive it with their own clock; `run()` loops it until
told to stop; `stop()` stops every process in reverse start order.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from order_execution.launcher.processes import ManagedProcess


@dataclass(frozen=True)
class Backoff:
    """Restart delays: `first_s`, doubling after each quick failure up to `max_s`.

    A run that lasted `stable_s` or more counts as healthy: the next delay is `first_s` again.
    """

    first_s: float = 0.5
    max_s: float = 30.0
    stable_s: float = 60.0

    def delay(self, failures: int) -> float:
        """The wait before the restart that follows `failures` earlier quick failures in a row."""
        return float(min(self.first_s * 2**failures, self.max_s))


@dataclass
class _Watched:
    process: ManagedProcess
    started_at: float
    failures: int = 0  # quick failures in a row: sets the next delay
    restarts: int = 0  # every restart so far, for the report
    restart_at: float | None = None  # set while it is dead and waiting for its restart
    backoff: Backoff | None = None  # its own delays, else the supervisor's


def _shorten(line: str, limit: int = 200) -> str:
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Supervisor:
    """Starts ManagedProcesses and restarts any that exits, with exponential backoff.

    Each death is reported as one line through `report` (stderr by default) with the exit
    code, the delay, the restart count and the last lines of the process's log. Restarts
    append to the log. Nothing is restarted after `stop()`.
    """

    def __init__(
        self,
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        report: Callable[[str], None] = _to_stderr,
        log_lines: int = 3,
    ) -> None:
        self.backoff = backoff or Backoff()
        self._clock = clock
        self._report = report
        self._log_lines = log_lines
        self._watched: list[_Watched] = []
        self._stopped = False
        self.started_pids: list[int] = []  # every pid started, restarts included, oldest first

    @property
    def processes(self) -> list[ManagedProcess]:
        """The supervised processes in start order."""
        return [watched.process for watched in self._watched]

    def restarts(self, name: str) -> int:
        """How many times the process called `name` has been restarted."""
        return next(w.restarts for w in self._watched if w.process.name == name)

    def start(self, process: ManagedProcess, *, backoff: Backoff | None = None) -> ManagedProcess:
        """Start `process` (truncating its log) and supervise it from now on, restarting it with
        `backoff`'s delays if given (else the supervisor's)."""
        # Watched before it starts: an interrupt right after the fork still finds it in stop().
        self._watched.append(_Watched(process, started_at=self._clock(), backoff=backoff))
        process.start()
        self.started_pids.append(process.pid)
        return process

    def poll(self) -> None:
        """Notice processes that exited (and schedule their restart); restart those that are due."""
        if self._stopped:
            return
        now = self._clock()
        for watched in self._watched:
            if watched.restart_at is None and not watched.process.alive():
                # A dead leader can leave children in its group (Dramatiq's forked workers);
                # they would go on consuming next to the replacement, so they go now.
                watched.process.stop()
                self._schedule(watched, now, f"exited (code {watched.process.returncode})")
            if watched.restart_at is not None and now >= watched.restart_at:
                self._restart(watched, now)

    def run(self, stopping: threading.Event, interval_s: float = 0.5) -> None:
        """Call `poll()` every `interval_s` (sooner when a restart is due) until `stopping` is set."""
        while not stopping.is_set():
            self.poll()
            stopping.wait(self._next_wait(interval_s))

    def stop(self) -> None:
        """Stop every process by pid, in reverse start order; nothing is restarted afterwards."""
        self._stopped = True
        for watched in reversed(self._watched):
            watched.process.stop()

    def _schedule(self, watched: _Watched, now: float, what: str) -> None:
        backoff = watched.backoff or self.backoff
        if now - watched.started_at >= backoff.stable_s:
            watched.failures = 0
        delay = backoff.delay(watched.failures)
        watched.failures += 1
        watched.restarts += 1
        watched.restart_at = now + delay
        lines = watched.process.log_tail(self._log_lines).splitlines()
        # Whole lines, each cut short: JSON log lines can be long, and the report stays one line.
        tail = " | ".join(_shorten(line.strip()) for line in lines if line.strip())
        self._report(
            f"{watched.process.name} {what}; restarting in {delay:.1f} s (restart #{watched.restarts}); "
            f"last log lines: {tail or '(none)'}"
        )

    def _restart(self, watched: _Watched, now: float) -> None:
        watched.restart_at = None
        watched.started_at = now
        process = watched.process
        try:
            process.log_dir.mkdir(parents=True, exist_ok=True)
            with process.log_path.open("a") as log:  # marks where the new run's output begins
                log.write(f"--- restart #{watched.restarts} ---\n")
            process.start(append=True)
        except OSError as exc:  # e.g. the binary is gone: keep trying, with the same backoff
            self._schedule(watched, now, f"could not be restarted ({exc})")
            return
        self.started_pids.append(process.pid)

    def _next_wait(self, interval_s: float) -> float:
        due = [w.restart_at for w in self._watched if w.restart_at is not None]
        if not due:
            return interval_s
        return max(0.0, min(interval_s, min(due) - self._clock()))
