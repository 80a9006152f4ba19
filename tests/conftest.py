"""Fixtures shared by every tier.

Real services (Redis on 127.0.0.1:6379, NATS on 127.0.0.1:4222) are required by the
integration tier: a missing one skips the test locally and fails it in CI (CI=true). A test
that asks for them (`real_redis`, `real_nats`) without the `integration` marker fails at
setup, so `pytest -m "not integration"` never needs them.

The settings the user has exported (`ORDER_EXECUTION__*`, `ORDER_EXECUTION_CONFIG` and
the seed's names such as `REDIS_ADDRESS`) are removed for the whole session, so no test
and no process a test starts reads them: each sets what it needs explicitly.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Iterable, Iterator

import fakeredis
import pytest
import redis

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
NATS_URL = "nats://127.0.0.1:4222"
# What runtime/settings.py reads from the environment: its own prefix and config-file
# variable, and the original service's flat names.
SETTINGS_ENV_PREFIXES = ("ORDER_EXECUTION_", "BINANCE_")
SEED_ENV_NAMES = frozenset({"REDIS_ADDRESS", "REDIS_PASSWORD", "NATS_ADDRESS", "LOG_LEVEL", "LOG_FORMAT"})
REAL_SERVICE_FIXTURES = frozenset({"real_redis", "real_nats"})


def unmarked_real_services(fixture_names: Iterable[str], markers: Iterable[str]) -> list[str]:
    """The real-service fixtures among `fixture_names` that a test without the `integration`
    marker (among `markers`) asks for: none for a marked test."""
    if "integration" in markers:
        return []
    return sorted(REAL_SERVICE_FIXTURES.intersection(fixture_names))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail a test that asks for the machine's Redis or NATS but is not marked `integration`.

    Covers fixtures asked for directly or through other fixtures; one fetched at run time with
    `request.getfixturevalue` is not seen here, so such a parameter carries the marker itself
    (`pytest.param("redis", marks=pytest.mark.integration)`).
    """
    used = unmarked_real_services(getattr(item, "fixturenames", ()), (m.name for m in item.iter_markers()))
    if used:
        pytest.fail(
            f"{item.nodeid} uses {', '.join(used)} but is not marked integration: "
            "add `pytestmark = pytest.mark.integration` to its module (or mark the test)",
            pytrace=False,
        )


def user_settings_env(names: Iterable[str]) -> list[str]:
    """Those of the environment variable `names` that the service's settings would read."""
    return [name for name in names if name.startswith(SETTINGS_ENV_PREFIXES) or name in SEED_ENV_NAMES]


@pytest.fixture(scope="session", autouse=True)
def _no_user_settings_env() -> Iterator[None]:
    """Run the session without the user's exported settings (restored afterwards).

    Session-scoped so that stacks started by session or module fixtures do not inherit
    them either; tests that need a variable set it with `monkeypatch.setenv`.
    """
    with pytest.MonkeyPatch.context() as patch:
        for name in user_settings_env(os.environ):
            patch.delenv(name)
        yield


def _require(service: str, available: bool, how: str) -> None:
    if available:
        return
    message = f"{service} is not reachable; start it with: {how}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def real_redis() -> str:
    """Address of the machine's Redis ("host:port")."""
    try:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=0.5).ping()
        up = True
    except redis.RedisError:
        up = False
    _require(
        "Redis", up, 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no'
    )
    return f"{REDIS_HOST}:{REDIS_PORT}"


@pytest.fixture(scope="session")
def real_nats() -> str:
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=0.5):
            up = True
    except OSError:
        up = False
    _require("NATS", up, "nats-server -a 127.0.0.1 -p 4222 -js")
    return NATS_URL


@pytest.fixture
async def fake_redis() -> AsyncIterator[fakeredis.FakeAsyncRedis]:
    client = fakeredis.FakeAsyncRedis()
    yield client
    await client.aclose()
