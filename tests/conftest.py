"""Fixtures shared by every tier.

Real services (Redis on 127.0.0.1:6379, NATS on 127.0.0.1:4222) are required by the
integration tier: a missing one skips the test locally and fails it in CI (CI=true).
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator

import fakeredis
import pytest
import redis

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
NATS_URL = "nats://127.0.0.1:4222"


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
