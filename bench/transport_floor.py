"""The transport floor: what an order's messages cost in CPU with no service logic at all.

Any design that keeps the service's outside surfaces pays for two hops per order whatever it
does in between, and on this machine they share the two cores with everything else:

* the API: one CreateOrder plus the updates StreamOrderUpdates sends for a MARKET order, from a
  gRPC client like the sweep's. Measured against bench/echo_service.py (answers at once, no
  validation, no Redis), both ends' CPU per order;
* the exchange hop: a signed POST /fapi/v1/order to the bench's simulator on one keep-alive
  aiohttp session (what a worker does, without its bookkeeping), the client's and the
  simulator's CPU per order. On the baseline account, so the service's listener sees none of it.

Both run open-loop at the given rate for `FLOOR_S` seconds, after the sweep, with the service idle.
The summary adds Redis and NATS as the sweep measured them: the floor of this design on this
machine, and the rate two cores could carry at it (bench/throughput_summary.py).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import grpc

from bench.cpu_meter import OTHER, CpuMeter
from bench.exchange_baselines import Account, market_order_query
from bench.load_session import Session
from order_execution.launcher.processes import ManagedProcess, free_port
from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc

FLOOR_S = 4.0
_SETTLE_TIMEOUT_S = 10.0
CLIENT = "client"


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


async def _open_loop(rate: int, n: int, send: Callable[[int], Awaitable[None]]) -> None:
    """Start `send(i)` for i < n on a fixed schedule of `rate` per second; wait for all of them."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    tasks = []
    for i in range(n):
        delay = started + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(send(i)))
    await asyncio.gather(*tasks)


def _per_order(meter: CpuMeter, start: tuple[float, dict[str, dict[int, int]]], n: int) -> dict[str, float]:
    _, seconds = CpuMeter.seconds(start, meter.snapshot())
    return {name: s * 1000 / n for name, s in seconds.items() if name != OTHER}


async def api_floor(
    rate: int, log_dir: Path, updates: int, metadata: tuple[tuple[str, str], ...] = ()
) -> dict[str, float]:
    """CPU ms per order of the gRPC API alone: echo server and this client, at `rate` orders/s.
    The calls carry `metadata` (the sweep's API key), so the wire is the sweep's."""
    port = free_port()
    echo = ManagedProcess(
        "echo-service",
        [
            sys.executable,
            str(Path(__file__).with_name("echo_service.py")),
            "--port",
            str(port),
            "--updates",
            str(updates),
        ],
        log_dir=log_dir,
    ).start()
    try:
        echo.wait_until("listening", lambda: _port_open(port))
        n = int(rate * FLOOR_S)
        expected = n * updates
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = order_pb2_grpc.OrderServiceStub(channel)
            received = 0
            all_in = asyncio.Event()

            async def read() -> None:
                nonlocal received
                async for _ in stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest(), metadata=metadata):
                    received += 1
                    if received >= expected:
                        all_in.set()

            reader = asyncio.create_task(read())
            tag = secrets.token_hex(3)
            await stub.CreateOrder(
                pb.CreateOrderRequest(client_order_id=f"warm{tag}", symbol="BTCUSDT"), metadata=metadata
            )
            await asyncio.sleep(0.3)
            received = 0
            meter = CpuMeter({"server": (echo.pid, False), CLIENT: (os.getpid(), False)})
            start = meter.snapshot()

            async def create(i: int) -> None:
                request = pb.CreateOrderRequest(
                    client_order_id=f"floor{tag}-{i}",
                    symbol="BTCUSDT",
                    side=pb.BUY,
                    type=pb.MARKET,
                    quantity="0.002",
                )
                await stub.CreateOrder(request, timeout=_SETTLE_TIMEOUT_S, metadata=metadata)

            await _open_loop(rate, n, create)
            await asyncio.wait_for(all_in.wait(), _SETTLE_TIMEOUT_S)
            cost = _per_order(meter, start, n)
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        return cost
    finally:
        echo.stop()


async def exchange_floor(
    rate: int, base_url: str, account: Account, session: Session, simulator_pid: int
) -> dict[str, float]:
    """CPU ms per order of the exchange hop alone: this aiohttp client and the simulator."""
    n = int(rate * FLOOR_S)
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(
        base_url, connector=connector, headers={"X-MBX-APIKEY": account.key}
    ) as http:

        async def post(i: int) -> None:
            query = market_order_query(account, session, session.symbols[i % len(session.symbols)])
            async with http.post(f"/fapi/v1/order?{query}") as reply:
                await reply.read()
                if reply.status != 200:
                    raise RuntimeError(f"simulator answered {reply.status}: {await reply.text()}")

        await _open_loop(20, 20, post)  # open the connections first
        meter = CpuMeter({"simulator": (simulator_pid, True), CLIENT: (os.getpid(), False)})
        start = meter.snapshot()
        await _open_loop(rate, n, post)
        return _per_order(meter, start, n)
