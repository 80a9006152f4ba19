"""The user stream notices a socket whose far end went silent (a host or path lost, no FIN/RST).

A websocket server on loopback that never answers pings stands in for a dead path: with
`heartbeat_s` the stream gives up on it and reconnects; a server that answers pings keeps
its one connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import cast

from aiohttp import web

from order_execution.exchange.client import BinanceClient
from order_execution.exchange.user_stream import OrderEvent, UserStream

HEARTBEAT_S = 0.4


class _ListenKeys:
    async def create_listen_key(self) -> str:
        return "listen-key"

    async def keepalive_listen_key(self) -> None:
        return None


async def _serve(answer_pings: bool) -> AsyncIterator[tuple[str, list[int]]]:
    connections: list[int] = []

    async def private_ws(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=answer_pings)
        await ws.prepare(request)
        connections.append(len(connections) + 1)
        with contextlib.suppress(Exception):
            async for _ in ws:  # never sends; reads (and, without autoping, ignores) pings
                pass
        return ws

    app = web.Application()
    app.router.add_get("/private/ws", private_ws)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"ws://127.0.0.1:{port}", connections
    finally:
        await runner.cleanup()


async def _connections_after(answer_pings: bool, seconds: float) -> int:
    async for base, connections in _serve(answer_pings):
        stream = UserStream(
            cast(BinanceClient, _ListenKeys()), base, heartbeat_s=HEARTBEAT_S, backoff_max_s=0.2
        )

        async def ignore(event: OrderEvent) -> None:
            return None

        async def nothing() -> None:
            return None

        task = asyncio.create_task(stream.run(ignore, nothing))
        await asyncio.sleep(seconds)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return len(connections)
    raise AssertionError("unreachable")


async def test_a_socket_that_stops_answering_pings_is_replaced() -> None:
    # 3 s = 7.5 heartbeats; a far end that never pongs is given up on within 1.5 heartbeats.
    connections = await _connections_after(answer_pings=False, seconds=3.0)
    assert connections >= 2, f"still on the first socket after 3 s with heartbeat {HEARTBEAT_S} s"


async def test_a_socket_that_answers_pings_is_kept() -> None:
    assert await _connections_after(answer_pings=True, seconds=3.0) == 1
