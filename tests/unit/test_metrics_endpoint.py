"""A worker's or listener's own /metrics: its port, the next free one when taken, 404 elsewhere."""

from __future__ import annotations

import socket

import aiohttp

from order_execution.cli.up import metrics_ports
from order_execution.launcher.processes import free_port
from order_execution.orders import metrics
from order_execution.runtime.metrics_http import MetricsEndpoint


async def test_processes_sharing_a_port_setting_each_get_their_own() -> None:
    first = free_port()
    refreshed: list[int] = []

    async def refresh() -> None:
        refreshed.append(1)

    one = MetricsEndpoint("127.0.0.1", first, port_search=8, refresh=refresh)
    two = MetricsEndpoint("127.0.0.1", first, port_search=8)
    assert await one.start() == first
    second = await two.start()
    assert second is not None and second > first
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{first}/metrics") as response:
                assert response.status == 200
                assert metrics.ORDERS_CREATED._name in await response.text()
            assert refreshed == [1]
            for path in ("/", "/metricsx", "/health"):
                async with http.get(f"http://127.0.0.1:{second}{path}") as response:
                    assert response.status == 404, path
            async with http.get(f"http://127.0.0.1:{second}/health/live") as response:
                assert response.status == 200
    finally:
        await one.stop()
        await two.stop()


async def test_port_zero_serves_nothing() -> None:
    assert await MetricsEndpoint("127.0.0.1", 0).start() is None


def _two_free_ports_in_a_row() -> int:
    """A free port whose next port is free too (at the moment of asking)."""
    for _ in range(50):
        first = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", first + 1))
            except OSError:
                continue
        return first
    raise AssertionError("no two consecutive free ports found")


def test_up_gives_each_process_a_free_port() -> None:
    first = _two_free_ports_in_a_row()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", first + 1))
        taken.listen()
        ports = metrics_ports(first, 3, avoid=[first + 2])
    assert ports[0] == first and first + 1 not in ports and first + 2 not in ports
    assert len(set(ports)) == 3
    assert metrics_ports(0, 2) == [0, 0]
