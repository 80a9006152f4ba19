"""An OrderService that does nothing: the gRPC half of the throughput bench's transport floor.

CreateOrder answers at once with an order shaped like the service's, and pushes `--updates`
versions of it (NEW, SUBMITTING, SUBMITTED, FILLED: what the service streams for a MARKET
order) to every open StreamOrderUpdates call. No validation, no Redis, no queue: what is left
is what gRPC itself costs both ends per order. Run by bench/transport_floor.py as its own
process, on the same event loop policy as the gateway (uvloop).

Usage: python bench/echo_service.py --port 50999 [--updates 4]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc

MARKET_ORDER_STATES = (pb.NEW, pb.SUBMITTING, pb.SUBMITTED, pb.FILLED)


def _order(request: pb.CreateOrderRequest, state: pb.OrderState.ValueType, seq: int) -> pb.Order:
    now = int(time.time() * 1000)
    return pb.Order(
        order_id=f"{seq:08x}-0000-4000-8000-000000000000",
        client_order_id=request.client_order_id,
        symbol=request.symbol,
        side=request.side,
        type=request.type,
        state=state,
        quantity=request.quantity,
        filled_quantity=request.quantity if state == pb.FILLED else "0",
        average_price="50000.1" if state == pb.FILLED else "",
        created_at=now,
        updated_at=now,
    )


class EchoOrderService(order_pb2_grpc.OrderServiceServicer):
    def __init__(self, updates: int) -> None:
        self._states = MARKET_ORDER_STATES[:updates]
        self._streams: list[asyncio.Queue[pb.OrderUpdate]] = []
        self._seq = 0

    async def CreateOrder(self, request: pb.CreateOrderRequest, context: object) -> pb.CreateOrderResponse:
        self._seq += 1
        for version, state in enumerate(self._states, start=1):
            update = pb.OrderUpdate(
                order=_order(request, state, self._seq), resume_token=f"{self._seq}-{version}"
            )
            for stream in self._streams:
                stream.put_nowait(update)
        order = _order(request, pb.NEW, self._seq)
        return pb.CreateOrderResponse(
            order_id=order.order_id,
            client_order_id=order.client_order_id,
            state=order.state,
            timestamp=order.created_at,
            order=order,
        )

    async def StreamOrderUpdates(
        self, request: pb.StreamOrderUpdatesRequest, context: object
    ) -> AsyncIterator[pb.OrderUpdate]:
        stream: asyncio.Queue[pb.OrderUpdate] = asyncio.Queue()
        self._streams.append(stream)
        try:
            while True:
                yield await stream.get()
        finally:
            self._streams.remove(stream)


async def serve(port: int, updates: int) -> None:
    server = grpc.aio.server()
    service = EchoOrderService(updates)  # type: ignore[abstract]  # the two calls the floor makes only
    order_pb2_grpc.add_OrderServiceServicer_to_server(service, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"echo OrderService on 127.0.0.1:{port}, {updates} updates per order", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--updates", type=int, default=len(MARKET_ORDER_STATES))
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.updates))


if __name__ == "__main__":
    main()
