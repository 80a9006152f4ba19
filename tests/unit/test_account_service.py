"""AccountService calls the exchange through the account's shared circuit breakers, as the workers do.

The service is built as the gateway builds it (`AccountServicer.from_settings`: the exchange client
with the breakers synced through Redis); a worker's breakers on the same Redis open the query breaker, and
GetAccountSettings is then refused UNAVAILABLE naming it, without a request reaching the exchange.
The exchange is a local HTTP server (loopback, free port) that records what it is asked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import fakeredis
import grpc
import pytest
from aiohttp import web

from order_execution.exchange.account import breakers
from order_execution.exchange.breakers import Group
from order_execution.exchange.errors import ExchangeUnavailable
from order_execution.gateway.account_admin import AccountServicer
from order_execution.launcher.processes import free_port
from order_execution.proto import admin_pb2 as apb
from order_execution.proto import admin_pb2_grpc
from order_execution.runtime.settings import Settings

POSITION_RISK = [{"symbol": "BTCUSDT", "leverage": "20", "marginType": "cross", "maxNotionalValue": "5e5"}]


@dataclass
class FakeExchange:
    url: str
    paths: list[str] = field(default_factory=list)  # every request's path, in order


@pytest.fixture
async def exchange() -> AsyncIterator[FakeExchange]:
    recorded: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        recorded.append(request.path)
        if request.path == "/fapi/v1/time":
            return web.json_response({"serverTime": int(time.time() * 1000)})
        if request.path == "/fapi/v1/positionSide/dual":
            return web.json_response({"dualSidePosition": False})
        if request.path == "/fapi/v2/positionRisk":
            return web.json_response(POSITION_RISK)
        return web.json_response({"code": -1000, "msg": "not played here"}, status=400)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield FakeExchange(f"http://127.0.0.1:{port}", recorded)
    finally:
        await runner.cleanup()


async def test_an_open_query_breaker_refuses_account_reads_without_calling_the_exchange(
    exchange: FakeExchange,
) -> None:
    settings = Settings(
        symbols=["BTCUSDT"],
        exchange={"base_url": exchange.url, "api_key": "k" * 64, "secret_key": "s" * 64},
        rate_limit={"enabled": False},
    )
    server_redis = fakeredis.FakeServer()
    gateway_redis = fakeredis.FakeAsyncRedis(server=server_redis)
    worker_redis = fakeredis.FakeAsyncRedis(server=server_redis)
    service = AccountServicer.from_settings(settings, gateway_redis, None)
    server = grpc.aio.server()
    admin_pb2_grpc.add_AccountServiceServicer_to_server(service, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            account = admin_pb2_grpc.AccountServiceStub(channel)
            shown = await account.GetAccountSettings(apb.GetAccountSettingsRequest(), timeout=5)
            assert [s.leverage for s in shown.symbols] == [20]
            assert "/fapi/v2/positionRisk" in exchange.paths

            # A worker meets exchange faults on queries until its breaker opens, and stops.
            worker_breakers = breakers(worker_redis, settings, settings.trading_accounts[0])
            for _ in range(settings.circuit_breaker.failure_threshold):
                with pytest.raises(ExchangeUnavailable), worker_breakers.guard(Group.QUERY):
                    raise ExchangeUnavailable("HTTP 503 -1001: Service Unavailable.")
            await worker_breakers.aclose()
            # The gateway's breakers read the shared state every 0.25 s: refused within a few.
            async with asyncio.timeout(5):
                while True:
                    try:
                        await account.GetAccountSettings(apb.GetAccountSettingsRequest(), timeout=5)
                    except grpc.aio.AioRpcError:
                        break
                    await asyncio.sleep(0.05)

            exchange.paths.clear()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await account.GetAccountSettings(apb.GetAccountSettingsRequest(), timeout=5)
    finally:
        await server.stop(0)
        await service.aclose()
        await gateway_redis.aclose()
        await worker_redis.aclose()
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert refused.value.details() == (
        "the exchange could not take it: circuit breaker binance_query_order is open"
    )
    assert exchange.paths == ["/fapi/v1/time"] * len(exchange.paths)  # only the clock, no account read
