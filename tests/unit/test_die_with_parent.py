"""A child started with `die_with_parent` does not outlive its parent, even a kill -9 of it.

A real parent process starts a real sleeping child through ManagedProcess and prints the
child's pid; the test kills the parent with SIGKILL and waits for the child to be gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from order_execution.launcher.processes import ManagedProcess

REPO = Path(__file__).resolve().parents[2]
PARENT = """
import sys, time
from pathlib import Path
from order_execution.launcher.processes import ManagedProcess
child = ManagedProcess(
    "sleeper", [sys.executable, "-c", "import time; time.sleep(120)"],
    log_dir=Path(sys.argv[1]), die_with_parent=sys.argv[2] == "1",
).start()
print(child.pid, flush=True)
time.sleep(120)
"""


def gone(pid: int) -> bool:
    """Exited (a zombie waiting for init to reap it counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def child_of_killed_parent(tmp_path: Path, die_with_parent: bool) -> int:
    """Start the parent, read its child's pid, kill -9 the parent; the child's pid."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path), "1" if die_with_parent else "0"],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    parent.stdout.close()
    parent.kill()
    parent.wait(timeout=10)
    return child


@pytest.mark.skipif(sys.platform != "linux", reason="prctl(PR_SET_PDEATHSIG) is Linux's")
def test_the_child_dies_with_its_killed_parent(tmp_path: Path) -> None:
    child = child_of_killed_parent(tmp_path, die_with_parent=True)
    try:
        deadline = time.monotonic() + 30  # wide: SIGTERM is immediate, a loaded machine is not
        while not gone(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(child)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def test_without_it_the_child_is_orphaned(tmp_path: Path) -> None:
    """The control: the same child without the flag outlives its parent (what `up` used to do)."""
    child = child_of_killed_parent(tmp_path, die_with_parent=False)
    try:
        time.sleep(1.0)  # the flagged child above is gone well within this; this one must not be
        assert not gone(child)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


async def test_children_of_a_process_running_grpc_all_reach_their_exec(tmp_path: Path) -> None:
    """With gRPC's runtime running in the parent, Popen's preexec_fn (a plain fork) aborted about
    1 child in 20 before its exec, so a test stack's simulator sometimes "exited while starting".
    100 children at that rate would all start about once in 170 runs; through the wrapper, always."""
    server = grpc.aio.server()
    server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        failed = []
        for index in range(100):
            child = ManagedProcess(
                f"child-{index}", ["/bin/echo", "started"], log_dir=tmp_path, die_with_parent=True
            ).start()
            assert child.process is not None
            code = child.process.wait(timeout=30)
            if code != 0 or "started" not in child.log_path.read_text():
                failed.append((code, child.log_path.read_text()[:120]))
        assert failed == []
    finally:
        await server.stop(0)
