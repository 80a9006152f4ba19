"""Gateway process wiring: connect, serve gRPC on 50051 and HTTP on 9091, stop cleanly."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import grpc
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from order_execution.exchange.account import breaker_namespace, rate_budget
from order_execution.gateway.account_admin import AccountServicer
from order_execution.gateway.accounts import TradingAccounts
from order_execution.gateway.admin_servicer import AdminServicer
from order_execution.gateway.admission import AccountGate, Admission
from order_execution.gateway.auth import Authenticator
from order_execution.gateway.handlers import Intake
from order_execution.gateway.http import HealthChecks, build_http_app
from order_execution.gateway.keepalive import keepalive_options
from order_execution.gateway.risk import RiskGate
from order_execution.gateway.rules_cache import RulesCache
from order_execution.gateway.servicer import OrderServicer
from order_execution.gateway.tls import add_port
from order_execution.gateway.updates import UpdateHub
from order_execution.orders.listener_status import ListenerStatus
from order_execution.orders.outbox import Outbox
from order_execution.orders.risk_state import RiskState
from order_execution.orders.rules_store import RulesStore
from order_execution.orders.store import OrderStore
from order_execution.proto import admin_pb2, admin_pb2_grpc, order_pb2, order_pb2_grpc
from order_execution.runtime.redis_connection import open_redis
from order_execution.runtime.settings import Settings, refuse_open_without_auth
from order_execution.runtime.shutdown import stop_on_signals

log = logging.getLogger(__name__)

_CLEANUP_FLOOR_S = 0.2  # each shutdown step gets at least this, even past the grace period

SERVICE_NAME = order_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name
ADMIN_SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
ACCOUNT_SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["AccountService"].full_name


async def serve(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run the gateway until `stop` is set or SIGINT/SIGTERM arrives.

    Raises SettingsError, before binding anything, if `server.host` is not loopback while
    auth is off. A start that fails (a port in use) raises after stopping what it started.
    """
    refuse_open_without_auth(settings, "gateway")
    if stop is None:
        stop = asyncio.Event()
        stop_on_signals(stop, grace_s=settings.server.shutdown_grace_ms / 1000, process="gateway")
    cleanup = _Cleanup(settings.server.shutdown_grace_ms / 1000)
    try:
        await _serve(settings, stop, cleanup)
    finally:
        # Also after a failed start (a port in use): background loops left running would keep
        # the process from exiting, and its supervisor from restarting it.
        await cleanup.run()
    log.info("gateway stopped")


class _Cleanup:
    """What to undo at the end, last started first; each step bounded by what is left of the
    grace period (at least `_CLEANUP_FLOOR_S`), so a Redis outage cannot hang the exit."""

    def __init__(self, grace_s: float) -> None:
        self._grace_s = grace_s
        self._steps: list[Callable[[], Awaitable[object]]] = []
        self._deadline: float | None = None

    def add(self, step: Callable[[], Awaitable[object]]) -> None:
        self._steps.append(step)

    def start_clock(self) -> None:
        """The grace period starts now (stopping began)."""
        self._deadline = asyncio.get_running_loop().time() + self._grace_s

    async def run(self) -> None:
        if self._deadline is None:
            self.start_clock()
        assert self._deadline is not None
        loop = asyncio.get_running_loop()
        for step in reversed(self._steps):
            try:
                async with asyncio.timeout(max(self._deadline - loop.time(), _CLEANUP_FLOOR_S)):
                    await step()
            except Exception as exc:
                log.warning(
                    "gateway shutdown: %s did not finish cleanly (%r)",
                    getattr(step, "__qualname__", step),
                    exc,
                )


async def _serve(settings: Settings, stop: asyncio.Event, cleanup: _Cleanup) -> None:
    redis_client = open_redis(settings.redis)
    cleanup.add(redis_client.aclose)
    store = OrderStore.from_settings(redis_client, settings)
    rules = RulesCache(RulesStore(redis_client, namespace=settings.redis.namespace))
    rules.start()  # loads at once, and keeps retrying while Redis is away
    cleanup.add(rules.stop)
    # The outbox tail blocks on its own connection, so it never queues behind order writes.
    tail_client = open_redis(settings.redis, blocking_reads_ms=1000)
    cleanup.add(tail_client.aclose)
    hub = UpdateHub(
        Outbox(
            tail_client,
            namespace=settings.redis.namespace,
            retention_s=settings.performance.update_retention_s,
        ),
        max_streams=settings.server.max_streams,
        max_streams_per_client=settings.server.max_streams_per_client,
        replicas=store.replica_probe("gateway-tail"),  # None unless redis.min_replica_acks
    )
    await hub.start()
    cleanup.add(hub.stop)
    # Each account's own budget and its venue's breakers: one account's limits refuse only its orders.
    gates = {
        account.name: AccountGate(
            rate_budget(redis_client, settings, account), breaker_namespace(settings, account)
        )
        for account in settings.trading_accounts
    }
    admission = Admission(
        store=store,
        settings=settings.admission,
        max_order_age_ms=settings.worker.max_order_age_ms,
        accounts=gates,
        breaker_settings=settings.circuit_breaker,
    )
    risk_gate = RiskGate(
        RiskState(redis_client, namespace=settings.redis.namespace),
        settings.risk,
        accounts=settings.account_names,
    )
    risk_gate.start()  # every account's limits and kill switch, and mark prices, reloaded every 0.25 s
    cleanup.add(risk_gate.stop)
    intake = Intake(
        store=store,
        rules=rules,
        risk=settings.risk,
        admission=admission,
        risk_gate=risk_gate,
        list_scan_cap=settings.server.list_scan_cap,
        accounts=TradingAccounts(tuple(settings.account_names)),
    )

    server = grpc.aio.server(options=keepalive_options(settings.server))
    auth = Authenticator(settings.auth)
    order_pb2_grpc.add_OrderServiceServicer_to_server(
        OrderServicer(intake, hub, auth if auth.enabled else None), server
    )
    admin_pb2_grpc.add_AdminServiceServicer_to_server(
        AdminServicer(risk_gate, intake, auth if auth.enabled else None, clients=settings.auth.clients),
        server,
    )
    # AccountService calls the exchange through the account's shared budget and breakers.
    account = AccountServicer.from_settings(settings, redis_client, auth if auth.enabled else None)
    cleanup.add(account.aclose)
    admin_pb2_grpc.add_AccountServiceServicer_to_server(account, server)
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            ADMIN_SERVICE_NAME,
            ACCOUNT_SERVICE_NAME,
            health.SERVICE_NAME,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    grpc_address = f"{settings.server.host}:{settings.server.grpc_port}"
    add_port(server, grpc_address, settings.server.tls)
    await server.start()
    cleanup.add(lambda: server.stop(0))  # a no-op after the graceful stop below
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)

    listener = ListenerStatus(redis_client, namespace=settings.redis.namespace)
    # /health and the cluster gauges show every account's budget, as admission reads them.
    budgets = {name: gate.budget for name, gate in gates.items() if gate.budget is not None}
    runner = web.AppRunner(
        build_http_app(HealthChecks(settings, store, rules, listener, budgets, risk=risk_gate.state)),
        access_log=None,
    )
    await runner.setup()
    cleanup.add(runner.cleanup)
    site = web.TCPSite(runner, settings.server.host, settings.server.http_port)
    await site.start()
    log.info(
        "gateway serving gRPC on %s (%s, %s) and HTTP on %s:%d",
        grpc_address,
        "TLS" if settings.server.tls.enabled else "plaintext",
        "API keys required" if auth.enabled else "NO authentication",
        settings.server.host,
        settings.server.http_port,
    )

    await stop.wait()
    log.info("gateway stopping: refusing new calls, ending update streams with their resume token")
    cleanup.start_clock()
    # New calls are refused at once; calls in progress get the grace period, then are cancelled.
    stopping = asyncio.create_task(server.stop(settings.server.shutdown_grace_ms / 1000))
    await health_servicer.enter_graceful_shutdown()
    await hub.close_streams()  # each stream ends OK, its resume token in the trailing metadata
    await stopping
