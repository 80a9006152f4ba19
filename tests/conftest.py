"""Fixtures shared by every tier.

Real services (Redis on 127.0.0.1:6379, NATS on 127.0.0.1:4222) are required by the
integration tier: a missing one skips the test locally and fails it in CI (CI=true).

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
# What orders/settings.py reads from the environment: its own prefix and config-file
# variable, and the original service's flat names.
SETTINGS_ENV_PREFIXES = ("ORDER_EXECUTION_", "BINANCE_")
SEED_ENV_NAMES = frozenset({"REDIS_ADDRESS", "REDIS_PASSWORD", "NATS_ADDRESS", "LOG_LEVEL", "LOG_FORMAT"})


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
