"""CPU seconds per process group from /proc, for the throughput bench (bench/throughput.py).

A `CpuMeter` snapshots utime+stime of named processes (optionally with their descendants) and
the busy time of all CPUs; between two snapshots it reports CPU seconds per group, plus
"rest of machine": whatever else ran. `stack_meter` names the groups of a local stack (each
service process, Redis, NATS and the bench client itself).
"""

from __future__ import annotations

import glob
import math
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

from order_execution.launcher.stack import LocalStack

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
Snapshot = tuple[float, dict[str, dict[int, int]]]


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of every thread of `pid`, in clock ticks (None once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # fields[0] is the state, field 3 of proc(5)
    return int(fields[11]) + int(fields[12])


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (via /proc/<pid>/task/*/children)."""
    found, todo = [pid], [pid]
    while todo:
        parent = todo.pop()
        for path in glob.glob(f"/proc/{parent}/task/*/children"):
            try:
                children = [int(c) for c in Path(path).read_text().split()]
            except OSError:
                continue
            for child in children:
                if child not in found:
                    found.append(child)
                    todo.append(child)
    return found


def listening_pid(port: int) -> int | None:
    """The process listening on TCP `port` (its socket inode in /proc/net/tcp, found in /proc/*/fd)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{parts[9]}]")
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(proc.name)
        except OSError:
            continue
    return None


def pid_by_name(name: str) -> int | None:
    for comm in glob.glob("/proc/[0-9]*/comm"):
        try:
            if Path(comm).read_text().strip() == name:
                return int(comm.split("/")[2])
        except OSError:
            continue
    return None


def machine_busy_ticks() -> int:
    """Busy time of all CPUs (user+nice+system+irq+softirq+steal) from /proc/stat, in clock ticks."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return user + nice + system + irq + softirq + steal


OTHER = "rest of machine"


class CpuMeter:
    """CPU seconds per named group of processes between two snapshots.

    Also "rest of machine": all CPUs' busy time minus the groups', i.e. whatever else ran (other
    users' tests, the kernel's own work); large values mean the numbers were disturbed.
    """

    def __init__(self, groups: dict[str, tuple[int, bool]]) -> None:
        self.groups = groups  # name -> (pid, include its descendants)

    def snapshot(self) -> Snapshot:
        taken: dict[str, dict[int, int]] = {}
        for name, (pid, tree) in self.groups.items():
            ticks = {p: cpu_ticks(p) for p in (process_tree(pid) if tree else [pid])}
            taken[name] = {p: t for p, t in ticks.items() if t is not None}
        taken[OTHER] = {0: machine_busy_ticks()}
        return time.perf_counter(), taken

    @staticmethod
    def seconds(start: Snapshot, end: Snapshot) -> tuple[float, dict[str, float]]:
        """Wall seconds between the snapshots and CPU seconds per group (a new pid counts whole)."""
        out = {}
        for name, pids in end[1].items():
            before = start[1].get(name, {})
            out[name] = sum(max(0, t - before.get(p, 0)) for p, t in pids.items()) / CLOCK_TICKS
        machine = out.pop(OTHER)
        out[OTHER] = max(0.0, machine - sum(out.values()))
        return end[0] - start[0], out


def stack_meter(stack: LocalStack, redis_address: str) -> CpuMeter:
    """A meter over every process of `stack`, the Redis at `redis_address` ("host:port"), the stack's
    NATS server and this process (without its children: those are the stack)."""
    groups: dict[str, tuple[int, bool]] = {name: (p.pid, True) for name, p in stack.processes.items()}
    for name, port, comm in (
        ("redis", int(redis_address.rsplit(":", 1)[1]), "redis-server"),
        ("nats", urlsplit(stack.nats_url).port or 4222, "nats-server"),
    ):
        pid = listening_pid(port) or pid_by_name(comm)
        if pid is None:
            print(f"  note: no process found for {name}; its CPU is not measured", flush=True)
        else:
            groups[name] = (pid, True)
    groups["bench client"] = (os.getpid(), False)  # not its children: those are the stack
    return CpuMeter(groups)


def cpu_report(meter_start: Snapshot, meter_end: Snapshot, orders: float) -> dict[str, dict[str, float]]:
    """Per group between the snapshots: CPU ms per order (over `orders`, which may be fractional:
    the orders a window's length carries at the rate sent) and % of one core."""
    wall, seconds = CpuMeter.seconds(meter_start, meter_end)
    return {
        name: {
            "ms_per_order": s * 1000 / orders if orders else math.nan,
            "pct_core": s / wall * 100 if wall > 0 else math.nan,
        }
        for name, s in seconds.items()
    }
