"""AccountService calls the exchange through the account's shared circuit breakers, as the workers do.

The service is built as the gateway builds it (`AccountServicer.from_settings`: the exchange client
with the breakers synced through Redis); a worker's breakers on the same Redis open the query breaker, and
GetAccountSettings is then refused UNAVAILABLE naming it, without a request reaching the exchange.
With several accounts, each call goes to the account it names (the exchange sees that account's
API key), and an account the admin client may not trade is refused before any exchange call.
The exchange is a local HTTP server (loopback, free port) that records what it is asked.
"""

from __future__ import annotations

import asyncio
import secrets
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
from order_execution.gateway.auth import API_KEY_HEADER, Authenticator
from order_execution.launcher.processes import free_port
from order_execution.proto import admin_pb2 as apb
from order_execution.proto import admin_pb2_grpc
from order_execution.runtime.settings import Settings
from order_execution.runtime.settings_access import hash_key

POSITION_RISK = [{"symbol": "BTCUSDT", "leverage": "20", "marginType": "cross", "maxNotionalValue": "5e5"}]


@dataclass
class FakeExchange:
    url: str
    paths: list[str] = field(default_factory=list)  # every request's path, in order
    keys: list[str] = field(default_factory=list)  # every request's API key, in order


@pytest.fixture
async def exchange() -> AsyncIterator[FakeExchange]:
    recorded: list[str] = []
    keys: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        recorded.append(request.path)
        keys.append(request.headers.get("X-MBX-APIKEY", ""))
        if request.path == "/fapi/v1/time":
            return web.json_response({"serverTime": int(time.time() * 1000)})
        if request.path == "/fapi/v1/positionSide/dual":
            return web.json_response({"dualSidePosition": False})
        if request.path == "/fapi/v2/positionRisk":
            return web.json_response(POSITION_RISK)
        if request.path == "/fapi/v1/leverage":
            return web.json_response({"symbol": "BTCUSDT", "leverage": 5, "maxNotionalValue": "1000000"})
        return web.json_response({"code": -1000, "msg": "not played here"}, status=400)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield FakeExchange(f"http://127.0.0.1:{port}", recorded, keys)
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


async def test_each_call_goes_to_the_account_it_names_if_the_admin_may_trade_it(
    exchange: FakeExchange,
) -> None:
    """Two accounts on one venue: the request's `account` (empty: the first) picks the exchange
    client, so the exchange sees that account's API key; one not configured is INVALID_ARGUMENT,
    one the admin client may not trade PERMISSION_DENIED naming it, before any exchange call."""
    main_key, hedge_key, ops_key, root_key = (secrets.token_hex(32) for _ in range(4))
    settings = Settings(
        symbols=["BTCUSDT"],
        exchange={"base_url": exchange.url},
        accounts=[
            {"name": "main", "api_key": main_key, "secret_key": secrets.token_hex(32)},
            {"name": "hedge", "api_key": hedge_key, "secret_key": secrets.token_hex(32)},
        ],
        rate_limit={"enabled": False},
        auth={
            "clients": [
                {"name": "ops", "key_sha256": hash_key(ops_key), "admin": True, "accounts": ["main"]},
                {"name": "root", "key_sha256": hash_key(root_key), "admin": True},
            ]
        },
    )
    redis = fakeredis.FakeAsyncRedis()
    service = AccountServicer.from_settings(settings, redis, Authenticator(settings.auth))
    server = grpc.aio.server()
    admin_pb2_grpc.add_AccountServiceServicer_to_server(service, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    ops, root = ((API_KEY_HEADER, ops_key),), ((API_KEY_HEADER, root_key),)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            account = admin_pb2_grpc.AccountServiceStub(channel)
            shown = await account.GetAccountSettings(apb.GetAccountSettingsRequest(), metadata=ops, timeout=5)
            assert shown.account == "main" and set(exchange.keys) == {main_key}

            exchange.keys.clear()
            request = apb.GetAccountSettingsRequest(account="hedge")
            shown = await account.GetAccountSettings(request, metadata=root, timeout=5)
            assert shown.account == "hedge" and set(exchange.keys) == {hedge_key}
            exchange.keys.clear()
            await account.SetLeverage(
                apb.SetLeverageRequest(symbol="BTCUSDT", leverage=5, account="hedge"),
                metadata=root,
                timeout=5,
            )
            assert exchange.keys and set(exchange.keys) == {hedge_key}

            exchange.keys.clear()
            refusals = []
            for call in (
                account.GetAccountSettings(request, metadata=ops, timeout=5),
                account.SetLeverage(
                    apb.SetLeverageRequest(symbol="BTCUSDT", leverage=5, account="hedge"),
                    metadata=ops,
                    timeout=5,
                ),
                account.SetMarginType(
                    apb.SetMarginTypeRequest(symbol="BTCUSDT", margin_type=apb.ISOLATED, account="hedge"),
                    metadata=ops,
                    timeout=5,
                ),
                account.GetAccountSettings(
                    apb.GetAccountSettingsRequest(account="zz"), metadata=root, timeout=5
                ),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call
                refusals.append((refused.value.code(), refused.value.details()))
    finally:
        await server.stop(0)
        await service.aclose()
        await redis.aclose()
    denied = (
        grpc.StatusCode.PERMISSION_DENIED,
        "account: client ops may not trade account 'hedge'; its accounts: main",
    )
    assert refusals == [
        denied,
        denied,
        denied,
        (grpc.StatusCode.INVALID_ARGUMENT, "account: unknown account 'zz'; configured: main, hedge"),
    ]
    assert exchange.keys == []  # refused before any exchange call
