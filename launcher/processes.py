"""One child process started, watched and stopped by pid (`ManagedProcess`), and the small
helpers around it: free ports, readiness polls, process groups."""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Execs argv[2:] after asking the kernel for SIGTERM when the thread that started it dies
# (PR_SET_PDEATHSIG = 1, kept across exec); exits at once if that parent is already gone.
# A wrapper rather than Popen's preexec_fn: preexec_fn forces a plain fork(), whose handlers
# restart the gRPC runtime's poller in the child, and about 1 child in 20 of a process with
# gRPC loaded was aborted (SIGABRT, "epoll_wait error: Bad file descriptor") before its exec.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def _dying_with(parent_pid: int, command: Sequence[str]) -> list[str]:
    """`command`, run so that it gets SIGTERM when the thread that starts it dies (Linux only)."""
    if sys.platform != "linux":
        return list(command)
    return [sys.executable, "-I", "-S", "-c", _DIE_WITH_PARENT, str(parent_pid), *command]


_LOWEST_PORT = 10_000  # below: well-known and registered services' ports
_PORTS_BELOW_EPHEMERAL = 12_000
_PORT_TRIES = 64
_PORT_PICKER = random.SystemRandom()  # not the module RNG: a test may have seeded it


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing uses right now, below the kernel's ephemeral range.

    A port the kernel hands out (bind to 0) lies in the ephemeral range, where any outgoing
    connection may take it as its local port before the server meant for it binds: on a busy
    machine that happened (a gateway's HTTP port, "address already in use"). Below the range
    only servers bind. Falls back to the kernel's choice if no port there is free.
    """
    low = _ephemeral_range_start()
    candidates = range(max(_LOWEST_PORT, low - _PORTS_BELOW_EPHEMERAL), low)
    for _ in range(_PORT_TRIES if candidates else 0):
        port = _PORT_PICKER.choice(candidates)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ephemeral_range_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def port_open(host: str, port: int, timeout_s: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def python_command(module: str, *args: str) -> list[str]:
    """Run `python -m module args...` with this interpreter."""
    return [sys.executable, "-m", module, *args]


@dataclass
class ManagedProcess:
    """One child process with its own log file; stopped by pid, never left behind."""

    name: str
    command: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    log_dir: Path = Path(".run")
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    # Linux: SIGTERM the child when the thread that started it dies (kill -9 of `up` included),
    # so none is orphaned. Only for processes started, and restarted, from the main thread.
    die_with_parent: bool = False
    # The child's umask (-1: inherit). 0o077 for a server that rewrites its own config file
    # holding a password (Redis Sentinel does), so the rewritten file stays 0600.
    umask: int = -1
    # True once the current process's group has been SIGKILLed: its group id may be reused
    # by an unrelated process afterwards, so it is never signalled twice.
    _group_killed: bool = field(default=False, init=False, repr=False)

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def start(self, *, append: bool = False) -> ManagedProcess:
        """Start the command, its output going to `log_path` (truncated, or appended to if `append`)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab" if append else "wb") as log:
            command = _dying_with(os.getpid(), self.command) if self.die_with_parent else self.command
            self.process = subprocess.Popen(
                list(command),
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                start_new_session=True,  # its own group, so stop() also reaches its children
                umask=self.umask,
            )
        self._group_killed = False
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit code (negative: killed by that signal); None while running or never started."""
        return None if self.process is None else self.process.poll()

    def log_tail(self, lines: int = 20) -> str:
        """The last `lines` lines of the log (read from its end: appended logs grow)."""
        try:
            with self.log_path.open("rb") as log:
                size = log.seek(0, os.SEEK_END)
                log.seek(max(0, size - 64 * 1024))
                text = log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_until(self, ready: str, check: Callable[[], bool], timeout_s: float = 30.0) -> None:
        """Poll `check()` until true.

        Raises RuntimeError, with the log tail, if the process dies or time runs out.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited while starting; last log lines:\n{self.log_tail()}")
            if check():
                return
            time.sleep(0.1)
        raise RuntimeError(
            f"{self.name} not {ready} after {timeout_s:.0f} s; last log lines:\n{self.log_tail()}"
        )

    def kill(self) -> None:
        """kill -9 the whole group now and reap the leader, as a crash would (chaos tests).

        `stop` then leaves the group alone: once the leader is reaped its pid, which named the
        group, may be given to an unrelated process.
        """
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._group_killed = True
        self.process.wait(timeout=10)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the process, then SIGKILL its whole group: nothing it started is left behind.

        Only the leader gets SIGTERM: it stops its own children (Dramatiq's parent forwards
        the signal, and treats a second one as "kill now").
        """
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout_s)
        if not self._group_killed:
            with contextlib.suppress(ProcessLookupError):  # the group may already be empty
                os.killpg(self.process.pid, signal.SIGKILL)
            self._group_killed = True
        if self.process.poll() is None:
            self.process.wait(timeout=5)


def worker_processes(configured: int) -> int:
    """`configured`, or one per CPU core for 0."""
    return configured if configured > 0 else max(os.cpu_count() or 1, 1)


def run_together(commands: Sequence[Sequence[str]]) -> int:
    """Run `commands` as children until a stop signal (forwarded to each) or until one exits.

    When one exits on its own the others are stopped too, so a supervisor sees the failure
    and restarts the lot. Returns 0 if every child exited 0, else the first non-zero code.
    """
    children = [subprocess.Popen(list(command)) for command in commands]

    def forward(signum: int, frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.2)
        for child in children:
            if child.poll() is None:
                child.terminate()
        codes = [child.wait() for child in children]
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return next((code for code in codes if code != 0), 0)


def group_pids(pgid: int) -> set[int]:
    """Pids of the live processes in process group `pgid` (read from /proc; empty elsewhere)."""
    pids: set[int] = set()
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        # A zombie has exited; it only waits to be reaped (in a container, PID 1 may never do it).
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            pids.add(int(entry.name))
    return pids


def http_ok(url: str) -> bool:
    """Whether `url` answers 200 within 1 s; False for no answer, another status or one that is not
    HTTP at all (a poll of a port nobody listens on yet can connect to itself and read its own
    request back: Linux picks connect()'s source ports from the same ephemeral range)."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, http.client.HTTPException):
        return False
