"""The tiers stay apart: whatever needs the machine's Redis or NATS, or starts the service's
processes, is marked `integration`, so `pytest -m "not integration"` runs on fakes alone."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import unmarked_real_services

TESTS = Path(__file__).resolve().parents[1]


def module_marks(path: Path) -> set[str]:
    """The marker names in the module's `pytestmark` (a single mark or a list of them)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            return {
                sub.attr
                for sub in ast.walk(node.value)
                if isinstance(sub, ast.Attribute)
                and isinstance(sub.value, ast.Attribute)
                and sub.value.attr == "mark"
            }
    return set()


def test_a_test_asking_for_a_real_service_without_the_marker_is_caught() -> None:
    assert unmarked_real_services(["tmp_path", "real_redis", "real_nats"], ["parametrize"]) == [
        "real_nats",
        "real_redis",
    ]
    assert unmarked_real_services(["real_redis"], ["integration"]) == []
    assert unmarked_real_services(["fake_redis", "tmp_path"], []) == []


@pytest.mark.parametrize("path", sorted((TESTS / "integration").glob("test_*.py")), ids=lambda p: p.name)
def test_every_integration_module_is_marked(path: Path) -> None:
    assert "integration" in module_marks(path), f"{path.name}: add `pytestmark = pytest.mark.integration`"


def test_the_chaos_run_is_marked_chaos_and_integration() -> None:
    assert module_marks(TESTS / "chaos" / "test_chaos.py") == {"chaos", "integration"}


def test_collected_tests_asking_for_real_services_are_marked(request: pytest.FixtureRequest) -> None:
    """The setup hook's rule over everything this run selected, as one list (the hook fails each
    such test on its own; this also names them together)."""
    unmarked = [
        item.nodeid
        for item in request.session.items
        if unmarked_real_services(getattr(item, "fixturenames", ()), (m.name for m in item.iter_markers()))
    ]
    assert unmarked == []
