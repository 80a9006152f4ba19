"""What the two distributions built from this repository carry (issue 19): the service's wheel
(`pip wheel .`) neither the simulator nor the benches nor the tests; the simulator's (`pip wheel
simulator/`) only `usdm_simulator`. Read with setuptools' own discovery, which `pip wheel` runs on
each pyproject.toml's `[tool.setuptools.packages.find]` (namespace packages included, its default)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_namespace_packages

ROOT = Path(__file__).resolve().parents[2]


def _top_level_packages(project: Path) -> set[str]:
    """The top-level packages the wheel built from `project` (a folder with a pyproject.toml) holds."""
    find = tomllib.loads((project / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    return {name.split(".")[0] for name in find_namespace_packages(str(project), include=find["include"])}


def test_the_services_wheel_leaves_out_the_simulator_the_benches_and_the_tests() -> None:
    packages = _top_level_packages(ROOT)
    assert {"cli", "gateway", "workers", "listener", "proto", "tasks"} <= packages
    assert not packages & {"simulator", "usdm_simulator", "bench", "tests"}


def test_the_simulators_wheel_holds_usdm_simulator_alone() -> None:
    assert _top_level_packages(ROOT / "simulator") == {"usdm_simulator"}
