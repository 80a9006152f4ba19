"""The event bus: order updates and fills out over NATS JetStream.

Only the listener's outbox relay publishes (no order waits on NATS). Per stored change:
* `orders.updates.<SYMBOL>`: `{"order": {...}, "update_type": ..., "timestamp": <ms>}`, where
  `update_type` is the state moved to, or TRADE (trades recorded) or UPDATE (same state),
  with `Nats-Msg-Id: <order_id>:<version>`;
* `orders.fills.<SYMBOL>`, one per trade the change recorded:
  `{"order_id", "client_order_id", "symbol", "side", "fill": {...}, "order": {...}}` with
  `Nats-Msg-Id: <order_id>:fill:<trade_id>`.
The ids make a re-publish after a crash or a retry a no-op within the stream's
duplicate window. Both go to the JetStream stream `settings.nats.stream`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import nats
import orjson
from nats.aio.client import Client as NatsClient
from nats.js.api import StreamConfig
from nats.js.errors import BadRequestError

from orders.addresses import nats_servers
from orders.model import Fill, Order, now_ms

UPDATES_SUBJECT = "orders.updates"
FILLS_SUBJECT = "orders.fills"

log = logging.getLogger(__name__)


def update_subject(symbol: str) -> str:
    return f"{UPDATES_SUBJECT}.{symbol}"


def fill_subject(symbol: str) -> str:
    return f"{FILLS_SUBJECT}.{symbol}"


def encode_update(order: Order, update_type: str = "") -> bytes:
    return orjson.dumps(
        {
            "order": order.to_dict(),
            "update_type": update_type or str(order.state),
            "timestamp": order.updated_at or now_ms(),
        }
    )


def encode_fill(order: Order, fill: Fill) -> bytes:
    return orjson.dumps(
        {
            "order_id": order.order_id,
            "client_order_id": order.client_order_id,
            "symbol": order.symbol,
            "side": str(order.side),
            "fill": fill.to_dict(),
            "order": order.to_dict(),
        }
    )


def decode_update(data: bytes) -> Order:
    """The order inside an update message; raises ValueError/KeyError if malformed."""
    payload: dict[str, Any] = orjson.loads(data)
    return Order.from_dict(payload["order"])


class EventBus:
    """A NATS connection with JetStream publishing and core subscriptions."""

    def __init__(self, client: NatsClient, *, stream: str = "ORDERS") -> None:
        self._nc = client
        self._js = client.jetstream()
        self._stream = stream

    @classmethod
    async def connect(
        cls,
        address: str,
        *,
        stream: str = "ORDERS",
        ping_interval_s: int = 10,
        user: str = "",
        password: str = "",
    ) -> EventBus:
        """Connect, and create the JetStream stream if it does not exist yet.

        `address` is one NATS URL or several, comma-separated, optionally with percent-encoded
        `user:password@`; `user`/`password` given here win over those. The credentials go to
        the server apart from the URLs, decoded, so no character in them is special.
        """
        servers = nats_servers(address)
        if password:
            user_given, password_given = user, password
        else:
            user_given, password_given = servers.user, servers.password
        client = await nats.connect(
            servers.urls,
            ping_interval=ping_interval_s,
            max_reconnect_attempts=-1,
            connect_timeout=2,
            user=user_given or None,
            password=password_given or None,
        )
        bus = cls(client, stream=stream)
        await bus.ensure_stream()
        return bus

    async def ensure_stream(self) -> None:
        config = StreamConfig(
            name=self._stream,
            subjects=[f"{UPDATES_SUBJECT}.>", f"{FILLS_SUBJECT}.>"],
            duplicate_window=120.0,
            max_age=7 * 86400.0,
        )
        try:
            await self._js.add_stream(config)
        except BadRequestError:
            await self._js.update_stream(config)

    async def publish_update(
        self, order: Order, fills: tuple[Fill, ...] = (), *, update_type: str = "", timeout_s: float = 2.0
    ) -> None:
        """Publish one order version and the trades it recorded; idempotent per version and trade.

        `update_type` is the state moved to, or TRADE / UPDATE (see `OutboxEntry.update_type`).

        Raises nats' errors (timeout, no responders, disconnected) when JetStream did not ack.
        """
        # Written together, acks awaited together: cheaper than a request/reply round each.
        acks = [
            await self._js.publish_async(
                fill_subject(order.symbol),
                encode_fill(order, fill),
                headers={"Nats-Msg-Id": f"{order.order_id}:fill:{fill.trade_id}"},
            )
            for fill in fills
        ]
        acks.append(
            await self._js.publish_async(
                update_subject(order.symbol),
                encode_update(order, update_type),
                headers={"Nats-Msg-Id": f"{order.order_id}:{order.version}"},
            )
        )
        try:
            await asyncio.wait_for(asyncio.gather(*acks), timeout_s)
        finally:
            for ack in acks:
                ack.cancel()  # an ack that never came must not hold nats-py's pending slot

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    async def close(self) -> None:
        await self._nc.drain()
