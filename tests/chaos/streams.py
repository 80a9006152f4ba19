"""The chaos test's update-stream client: records every update, resumes with its last token.

The gateway's StreamOrderUpdates stream drops when the gateway dies (kill -9) and when a
client disconnects on purpose; this client resumes it with the resume_token of the last
update it got, so the checker (tests/chaos/verify.py) can ask for every version once, in
order, with no gap. It names no account, so it gets the updates of every account the client
may trade (with auth off, as in the chaos test: both of its accounts).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import grpc

from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc
from tests.chaos.verify import StreamEvent
from tests.chaos.workload import Clock

if TYPE_CHECKING:  # the async stub exists only in the type stubs
    Stub = order_pb2_grpc.OrderServiceAsyncStub


class StreamRecorder:
    """A StreamOrderUpdates client that records every update and resumes with its last token.

    It reconnects by itself (with the last resume_token, every 0.5 s) whenever the stream
    fails, e.g. UNAVAILABLE while the gateway is down; `disconnect_for` drops the
    connection on purpose and resumes after a pause. `drops` counts the streams that
    failed after delivering, `failures` every failed attempt (a dead gateway refuses a few).
    """

    def __init__(self, name: str, stub: Stub, clock: Clock) -> None:
        self.name = name
        self._stub = stub
        self._clock = clock
        self.events: list[StreamEvent] = []
        self.last_token = ""
        self.connections = 0
        self.failures = 0
        self.drops = 0
        self.tokens_seen = 0
        self._allowed = asyncio.Event()
        self._allowed.set()
        self._conn: asyncio.Task[None] | None = None
        self._down_since: float | None = None  # set from a failure until the next update arrives
        self._failed_tries = 0

    async def run(self) -> None:
        try:
            while True:
                await self._allowed.wait()
                self.connections += 1
                conn = self._conn = asyncio.create_task(self._consume(self.last_token))
                await asyncio.wait({conn})
                self._conn = None
                if conn.cancelled():
                    continue  # disconnect_for: wait until allowed again, then resume
                exc = conn.exception()
                self.failures += 1
                self._failed_tries += 1
                if self._down_since is None:  # the first failure of a run of them: say why, once
                    self.drops += 1
                    self._down_since = self._clock()
                    why = (
                        f"{exc.code().name} {exc.details()}"
                        if isinstance(exc, grpc.aio.AioRpcError)
                        else repr(exc)
                    )
                    self._clock.log(
                        "stream",
                        f"{self.name}: stream ended ({why}) after {len(self.events)} updates; "
                        f"resuming every 0.5 s with token {self.last_token[:24]!r}",
                    )
                await asyncio.sleep(0.5)
        finally:
            if self._conn is not None:
                self._conn.cancel()
                with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                    await self._conn

    async def _consume(self, token: str) -> None:
        call = self._stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest(symbols=[], resume_token=token))
        async for update in call:
            order = update.order
            self.events.append(StreamEvent(order.order_id, order.version, pb.OrderState.Name(order.state)))
            if update.resume_token:
                self.last_token = update.resume_token
                self.tokens_seen += 1
            if self._down_since is not None:
                self._clock.log(
                    "stream",
                    f"{self.name}: resumed with token {token[:24]!r} after {self._failed_tries} failed "
                    f"tries over {self._clock() - self._down_since:.1f} s; first update: order "
                    f"{order.order_id} version {order.version}",
                )
                self._down_since, self._failed_tries = None, 0

    async def disconnect_for(self, pause_s: float) -> None:
        self._allowed.clear()
        if self._conn is not None:
            self._conn.cancel()
        self._clock.log(
            "stream",
            f"{self.name}: disconnected on purpose after {len(self.events)} updates; "
            f"resuming in {pause_s:.1f} s with token {self.last_token[:24]!r}",
        )
        await asyncio.sleep(pause_s)
        self._allowed.set()
