"""The clients' view of two gateways: calls spread over both, and moved off one that fails.

`Gateways` looks like one OrderService stub to the chaos test's machinery (the Submitter, the
stream recorder, the checker). Each unary call goes to the next gateway in turn that is not
marked down; a call that fails for want of its gateway (DEADLINE_EXCEEDED, or an UNAVAILABLE
that gRPC raised for a failed connection, not one the gateway answered) marks it down for
`DOWN_S` (twice as long each time it fails again, up to `MAX_DOWN_S`), so the caller's retry
(same request, same client_order_id) goes to the other. A stream goes to its preferred gateway
(`preferring(i)`) unless that one is down, so a broken stream resumes, with its token, on the
other. Every call carries the clients' API key.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import grpc

from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc
from tests.chaos.workload import Clock

if TYPE_CHECKING:  # the async stub exists only in the type stubs
    Stub = order_pb2_grpc.OrderServiceAsyncStub

DOWN_S, MAX_DOWN_S = 3.0, 24.0
# How gRPC itself words a connection that failed or died (an UNAVAILABLE the gateway answered,
# e.g. "order store (Redis) is failing over", says the gateway is fine: retry there or anywhere).
_TRANSPORT_FAILURE = re.compile(
    r"failed to connect|Stream removed|Socket closed|Connection reset|recvmsg|Broken pipe|GOAWAY|"
    r"keepalive|Connection refused|No route to host|Network is unreachable|Connection timed out",
    re.IGNORECASE,
)
# Pings notice a gateway host that lost power (no FIN, no RST) within about 4 s; the gateway
# accepts pings this often (server.client_ping_min_ms).
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 2000),
    ("grpc.keepalive_timeout_ms", 2000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


@dataclass
class _Health:
    """Which gateways are marked down, shared by every view of the same pair. A gateway that
    fails again after its pause is paused twice as long (up to `MAX_DOWN_S`); an answer resets it."""

    names: Sequence[str]
    clock: Clock
    down_until: list[float] = field(default_factory=list)
    pause_s: list[float] = field(default_factory=list)
    failovers: int = 0  # calls that failed on one gateway and marked it down

    def __post_init__(self) -> None:
        self.down_until = [0.0] * len(self.names)
        self.pause_s = [0.0] * len(self.names)

    def up(self, index: int) -> bool:
        return time.monotonic() >= self.down_until[index]

    def answered(self, index: int) -> None:
        if self.pause_s[index]:
            self.clock.log("gateway", f"{self.names[index]}: answering again")
        self.pause_s[index] = 0.0

    def failed(self, index: int, exc: grpc.aio.AioRpcError) -> None:
        if not gateway_unreachable(exc) or not self.up(index):
            return
        self.failovers += 1
        pause = min(max(DOWN_S, 2 * self.pause_s[index]), MAX_DOWN_S)
        if not self.pause_s[index]:
            self.clock.log("gateway", f"{self.names[index]}: {exc.code().name}; using the other one")
        self.pause_s[index] = pause
        self.down_until[index] = time.monotonic() + pause


def gateway_unreachable(exc: grpc.aio.AioRpcError) -> bool:
    """The call failed for want of the gateway (no answer in time, or a connection that failed),
    not with an answer of the gateway's."""
    if exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
        return True
    return exc.code() is grpc.StatusCode.UNAVAILABLE and bool(_TRANSPORT_FAILURE.search(exc.details() or ""))


def as_stub(gateways: Gateways) -> Stub:
    """`gateways` typed as the OrderService stub it stands in for (the calls the clients make)."""
    return cast("Stub", gateways)


class Gateways:
    """One stub over several gateways; see the module docstring."""

    def __init__(
        self, stubs: Sequence[Stub], api_key: str, health: _Health, preferred: int | None = None
    ) -> None:
        self._stubs = stubs
        self._metadata = (("x-api-key", api_key),)
        self._health = health
        self._preferred = preferred
        self._turn = 0

    @classmethod
    def over(
        cls, channels: Sequence[grpc.aio.Channel], names: Sequence[str], api_key: str, clock: Clock
    ) -> Gateways:
        stubs = [order_pb2_grpc.OrderServiceStub(channel) for channel in channels]
        return cls(stubs, api_key, _Health(names, clock))

    def preferring(self, index: int) -> Gateways:
        """A view of the same gateways whose calls go to `index` while it is up."""
        return Gateways(self._stubs, self._metadata[0][1], self._health, preferred=index)

    @property
    def failovers(self) -> int:
        return self._health.failovers

    def _pick(self) -> int:
        count = len(self._stubs)
        order = (
            [self._preferred, *(i for i in range(count) if i != self._preferred)]
            if self._preferred is not None
            else [(self._turn + k) % count for k in range(count)]
        )
        self._turn += 1
        for index in order:
            if self._health.up(index):
                return index
        return min(range(count), key=lambda i: self._health.down_until[i])  # all down: the first back

    async def _unary(self, method: str, request: Any, timeout: float | None = None) -> Any:
        index = self._pick()
        call: Callable[..., Any] = getattr(self._stubs[index], method)
        try:
            answer = await call(request, timeout=timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            self._health.failed(index, exc)
            raise
        self._health.answered(index)
        return answer

    async def CreateOrder(
        self, request: pb.CreateOrderRequest, timeout: float | None = None
    ) -> pb.CreateOrderResponse:
        return await self._unary("CreateOrder", request, timeout)  # type: ignore[no-any-return]

    async def CancelOrder(
        self, request: pb.CancelOrderRequest, timeout: float | None = None
    ) -> pb.CancelOrderResponse:
        return await self._unary("CancelOrder", request, timeout)  # type: ignore[no-any-return]

    async def GetOrder(
        self, request: pb.GetOrderRequest, timeout: float | None = None
    ) -> pb.GetOrderResponse:
        return await self._unary("GetOrder", request, timeout)  # type: ignore[no-any-return]

    async def ListOrders(
        self, request: pb.ListOrdersRequest, timeout: float | None = None
    ) -> pb.ListOrdersResponse:
        return await self._unary("ListOrders", request, timeout)  # type: ignore[no-any-return]

    def StreamOrderUpdates(self, request: pb.StreamOrderUpdatesRequest) -> AsyncIterator[pb.OrderUpdate]:
        return self._stream(request)

    async def _stream(self, request: pb.StreamOrderUpdatesRequest) -> AsyncIterator[pb.OrderUpdate]:
        index = self._pick()
        call = self._stubs[index].StreamOrderUpdates(request, metadata=self._metadata)
        try:
            async for update in call:
                self._health.answered(index)
                yield update
        except grpc.aio.AioRpcError as exc:
            self._health.failed(index, exc)
            raise
        finally:
            call.cancel()
