"""`up`'s own Redis keeps what it was told: an order stored before a crash (kill -9) or a
clean stop is still there when Redis starts again on the same data directory."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest
import redis

from order_execution.launcher.launch import redis_command
from order_execution.launcher.processes import ManagedProcess, free_port, port_open

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["clean stop", "kill -9"])
def test_an_accepted_order_survives_a_restart_of_the_embedded_redis(
    tmp_path: Path, stop: signal.Signals
) -> None:
    server = shutil.which("redis-server")
    assert server, "redis-server is not on the PATH"
    port = free_port()
    command = redis_command(server, port, tmp_path, tmp_path / "redis.pid")

    def start() -> ManagedProcess:
        process = ManagedProcess("redis", command, log_dir=tmp_path).start(append=True)
        process.wait_until("accepting connections", lambda: port_open("127.0.0.1", port))
        return process

    process = start()
    try:
        client = redis.Redis(port=port)
        client.hset("oe:order:o1", mapping={"data": "{}", "version": 1})
        client.close()
        # No wait before a kill -9: Redis writes the AOF before it answers, so a process
        # crash loses nothing acknowledged (fsync every second guards against a machine crash).
        assert process.process is not None
        process.process.send_signal(stop)
        process.process.wait(timeout=10)
        process = start()
        client = redis.Redis(port=port)
        assert client.hget("oe:order:o1", "version") == b"1"
        client.close()
    finally:
        process.stop()
