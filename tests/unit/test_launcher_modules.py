"""The modules the launcher starts (`python -m <module>`) are the installed ones, found from any
directory: a bare folder name (`cli`) imports only from the repository root, and there as a second
copy of the code beside `order_execution.cli`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from order_execution.launcher.launch import SERVICE_MODULE, SIMULATOR_MODULE
from order_execution.launcher.processes import free_port


@pytest.mark.parametrize("module", [SERVICE_MODULE, SIMULATOR_MODULE])
def test_a_launched_module_runs_from_outside_the_repository(module: str, tmp_path: Path) -> None:
    # -P: nothing from the working directory (here an empty one) on sys.path; only what is installed.
    done = subprocess.run(
        [sys.executable, "-P", "-m", module, "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_free_ports_lie_below_the_ephemeral_range_where_no_outgoing_connection_takes_them() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_port() for _ in range(20)}
    assert all(10_000 <= port < low for port in ports)
    assert len(ports) > 1  # chosen at random, so two stacks starting at once rarely meet
