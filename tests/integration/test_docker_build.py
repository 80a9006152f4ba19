"""The image builds: deploy/Dockerfile's build stage followed for real, without a Docker engine.

tests/docker_build.py says exactly what is followed and what is mapped where (the image's
/opt, /src, /tmp, /app, /root and `cd /` onto a temporary root; the host's Python standing for
the python image's; the machine's pip cache instead of PIP_NO_CACHE_DIR). It needs the package
registry, so it is in the integration tier; on this machine it took 40 to 60 s (pip's downloads
most of it), and it is bounded at BUILD_BUDGET_S.

The Dockerfile before this test existed generated code for proto/order.proto only and failed
here with `ImportError: cannot import name 'admin_pb2' from 'proto'`:
    git show 9180365:deploy/Dockerfile > /tmp/old/Dockerfile
    .venv/bin/python -m tests.docker_build /tmp/old/Dockerfile
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.docker_build import ROLE_MODULES, ROOT, build_and_check

BUILD_BUDGET_S = 900  # pip installing ~60 packages on a loaded 2-core machine: a wide bound, not a measure

pytestmark = pytest.mark.integration


@pytest.mark.timeout(BUILD_BUDGET_S + 120)
def test_the_image_builds_and_every_role_runs_from_the_installed_package() -> None:
    started = time.monotonic()
    report = build_and_check(ROOT / "deploy" / "Dockerfile", budget_s=BUILD_BUDGET_S)
    print(f"\nbuild stage followed in {time.monotonic() - started:.0f} s; RUN seconds: {report.run_seconds}")

    # The roles the image's header promises are the ones checked here, and the CLI offers each.
    assert set(report.roles) == set(ROLE_MODULES), report.roles
    usage = report.outputs["order-execution --help"]
    for role in report.roles:
        assert role in usage, role
    assert "--account" in report.outputs["order-execution sim --help"]
    assert report.outputs["python -m order_execution.cli --help"] == usage
    # Every role's module came from the virtual env the runtime stage copies, not from a source tree.
    expected = {m for modules in ROLE_MODULES.values() for m in modules} | {"order_execution.cli.main"}
    assert expected <= set(report.module_files)
    for module, file in report.module_files.items():
        assert Path(file).is_relative_to(report.venv), (module, file)
        assert "site-packages" in Path(file).parts, (module, file)
