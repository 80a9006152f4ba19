"""The exchange session never follows a redirect: the API key must not reach the server it names.

Two local HTTP servers: the "exchange" answers every request with a redirect to the other,
which records the headers it receives. Real sockets on loopback (free ports).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from order_execution.exchange.client import BinanceClient
from order_execution.exchange.errors import ExchangeUnavailable
from order_execution.exchange.http import AiohttpTransport, Redirected
from order_execution.launcher.processes import free_port

API_KEY = "test-api-key-for-redirects-000111"


@dataclass
class Servers:
    exchange: str
    elsewhere: str
    received: list[dict[str, str]] = field(default_factory=list)  # headers the elsewhere server got


async def _start(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture(params=[301, 302, 307, 308])
async def servers(request: pytest.FixtureRequest) -> AsyncIterator[Servers]:
    received: list[dict[str, str]] = []

    async def record(req: web.Request) -> web.Response:
        received.append(dict(req.headers))
        return web.json_response({"serverTime": 1})

    elsewhere_app = web.Application()
    elsewhere_app.router.add_route("*", "/{tail:.*}", record)
    elsewhere_runner, elsewhere = await _start(elsewhere_app)

    async def redirect(req: web.Request) -> web.Response:
        return web.Response(status=request.param, headers={"Location": f"{elsewhere}{req.path_qs}"})

    exchange_app = web.Application()
    exchange_app.router.add_route("*", "/{tail:.*}", redirect)
    exchange_runner, exchange = await _start(exchange_app)
    try:
        yield Servers(exchange, elsewhere, received)
    finally:
        await exchange_runner.cleanup()
        await elsewhere_runner.cleanup()


async def test_a_redirect_is_an_error_and_the_key_stays_home(servers: Servers) -> None:
    transport = AiohttpTransport(servers.exchange, headers={"X-MBX-APIKEY": API_KEY}, timeout_s=5)
    try:
        with pytest.raises(Redirected) as caught:
            await transport.send("POST", "/fapi/v1/order?symbol=BTCUSDT&signature=abc")
    finally:
        await transport.close()
    assert servers.received == []  # never followed: the other server got nothing, key or not
    message = str(caught.value)
    assert "redirect" in message and "exchange.base_url" in message
    assert "signature" not in message  # the Location's path and query are left out


async def test_the_client_reports_the_redirect_as_nothing_executed(servers: Servers) -> None:
    client = BinanceClient(servers.exchange, api_key=API_KEY, secret_key="s" * 64, timeout_ms=5000)
    try:
        with pytest.raises(ExchangeUnavailable, match="redirect"):
            await client.server_time()
    finally:
        await client.close()
    assert all("X-MBX-APIKEY" not in headers for headers in servers.received)
    assert servers.received == []


async def test_a_plain_answer_still_comes_through(servers: Servers) -> None:
    """The recording server itself, reached directly: the transport works when nothing redirects."""
    transport = AiohttpTransport(servers.elsewhere, headers={"X-MBX-APIKEY": API_KEY}, timeout_s=5)
    try:
        response = await transport.send("GET", "/fapi/v1/time")
    finally:
        await transport.close()
    assert response.status == 200 and servers.received[0]["X-MBX-APIKEY"] == API_KEY
