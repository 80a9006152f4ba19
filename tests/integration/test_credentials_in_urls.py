"""Passwords with URL characters (`@`, `:`, `/`, `%`, ...) work against real servers, through
the settings and the one way each process connects (runtime/redis_connection.py, EventBus),
and never reach a log line or a traceback.

A redis-server with `requirepass` and a nats-server with an `authorization` block, each on a
free loopback port, configured through 0600 files as `up` does it.
"""

from __future__ import annotations

import io
import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

from order_execution.launcher.embedded_servers import nats_authorization
from order_execution.launcher.launch import redis_command
from order_execution.launcher.processes import ManagedProcess, free_port, port_open
from order_execution.launcher.run_dir import write_private
from order_execution.listener.events import EventBus
from order_execution.runtime.logs import JsonFormatter, add_secrets
from order_execution.runtime.redis_connection import open_redis
from order_execution.runtime.settings import Settings

pytestmark = pytest.mark.integration

PASSWORD = "p@ss:w/rd%41+?#&x-Secret"  # every character a hand-built URL gets wrong
NATS_USER = "order@execution:1"


def _server(name: str, command: list[str], port: int, log_dir: Path) -> Iterator[int]:
    process = ManagedProcess(name, command, log_dir=log_dir).start()
    try:
        process.wait_until("accepting connections", lambda: port_open("127.0.0.1", port))
        yield port
    finally:
        process.stop()


@pytest.fixture
def redis_port(tmp_path: Path) -> Iterator[int]:
    server = shutil.which("redis-server")
    assert server, "redis-server is not on the PATH"
    config = tmp_path / "redis.conf"
    write_private(config, f'requirepass "{PASSWORD}"\n')
    port = free_port()
    command = redis_command(server, port, tmp_path, tmp_path / "redis.pid", config)
    yield from _server("redis", command, port, tmp_path)


@pytest.fixture
def nats_port(tmp_path: Path) -> Iterator[int]:
    server = shutil.which("nats-server") or str(Path(sys.executable).with_name("nats-server"))
    config = tmp_path / "nats.conf"
    write_private(config, nats_authorization(PASSWORD, user=NATS_USER))
    port = free_port()
    command = [server, "-c", str(config), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp_path)]
    yield from _server("nats", command, port, tmp_path)


async def test_redis_with_the_password_from_the_settings(redis_port: int) -> None:
    settings = Settings(redis={"address": f"127.0.0.1:{redis_port}", "password": PASSWORD, "db": 2})
    client = open_redis(settings.redis)
    try:
        assert await client.ping()
        await client.set("oe:probe", "1")
        assert await client.get("oe:probe") == b"1"
    finally:
        await client.aclose()
    wrong = Settings(redis={"address": f"127.0.0.1:{redis_port}", "password": PASSWORD + "x"})
    with redis.Redis.from_url(wrong.redis.url) as sync_client, pytest.raises(redis.AuthenticationError):
        sync_client.ping()


@pytest.mark.parametrize("how", ["in the URL", "in nats.user/nats.password"])
async def test_nats_with_the_password_in_the_url_or_the_settings(nats_port: int, how: str) -> None:
    if how == "in the URL":
        address = f"nats://{quote(NATS_USER, safe='')}:{quote(PASSWORD, safe='')}@127.0.0.1:{nats_port}"
        settings = Settings(nats={"address": address})
    else:
        settings = Settings(
            nats={"address": f"nats://127.0.0.1:{nats_port}", "user": NATS_USER, "password": PASSWORD}
        )
    nats_settings = settings.nats
    bus = await EventBus.connect(
        nats_settings.address,
        stream="CREDENTIALS_TEST",
        user=nats_settings.user,
        password=nats_settings.password.get_secret_value(),
    )
    try:
        assert bus.connected
    finally:
        await bus.close()


def test_a_failure_naming_the_url_logs_no_password(redis_port: int) -> None:
    """A connection error's traceback that quotes the URL, formatted as every process formats it."""
    settings = Settings(redis={"address": f"127.0.0.1:{redis_port}", "password": PASSWORD})
    add_secrets(settings.secret_values())
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    log = logging.getLogger("test.credentials")
    log.addHandler(handler)
    try:
        try:
            with redis.Redis.from_url(settings.redis.url.replace(str(redis_port), "1")) as client:
                client.ping()
        except redis.ConnectionError:
            log.exception("redis at %s unreachable", settings.redis.url)
    finally:
        log.removeHandler(handler)
    output = stream.getvalue()
    assert "unreachable" in output and "Traceback" in output
    assert PASSWORD not in output and quote(PASSWORD, safe="") not in output
