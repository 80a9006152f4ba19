"""What the two distributions built from this repository carry (issue 19): the service's wheel
(`pip wheel .`) one top-level package, its namespace `order_execution`, with every product folder
in it and neither the simulator nor the benches nor the tests; the simulator's (`pip wheel
simulator/`) only `usdm_simulator`. Read with setuptools' own discovery, which `pip wheel` runs on
each pyproject.toml's `[tool.setuptools.packages.find]` (namespace packages included, its default)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_namespace_packages

ROOT = Path(__file__).resolve().parents[2]


def _packages(project: Path) -> set[str]:
    """The packages the wheel built from `project` (a folder with a pyproject.toml) holds."""
    find = tomllib.loads((project / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    return set(find_namespace_packages(str(project), include=find["include"]))


def _top_level_packages(project: Path) -> set[str]:
    return {name.split(".")[0] for name in _packages(project)}


def test_the_services_wheel_is_one_namespace_without_the_simulator_the_benches_and_the_tests() -> None:
    assert _top_level_packages(ROOT) == {"order_execution"}
    product = {name.split(".")[1] for name in _packages(ROOT) if name.count(".") >= 1}
    folders = {"cli", "launcher", "gateway", "workers", "listener", "service_layer", "tasks", "exchange"}
    assert folders | {"orders", "runtime", "proto"} == product


def test_every_product_folder_is_linked_into_the_namespace() -> None:
    """A new top-level package left out of order_execution/ would be missing from the wheel."""
    linked = {link.name for link in (ROOT / "order_execution").iterdir() if link.is_symlink()}
    not_product = {"bench", "tests", "order_execution"}
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")} - not_product
    assert linked == packages
    for name in linked:
        assert (ROOT / "order_execution" / name).resolve() == ROOT / name


def test_the_simulators_wheel_holds_usdm_simulator_alone() -> None:
    assert _top_level_packages(ROOT / "simulator") == {"usdm_simulator"}
