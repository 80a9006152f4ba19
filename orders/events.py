"""The event bus: order updates out over NATS.

Every stored change is published on `orders.updates.<SYMBOL>` as JSON
`{"order": {...}, "update_type": "<STATE>", "timestamp": <ms>}` through JetStream
(stream `settings.nats.stream`), with `Nats-Msg-Id: <order_id>:<version>` so a
re-publish after a retry or crash is dropped by the server's duplicate window.
Core NATS subscribers (the gateway's update stream) receive the same messages.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import StreamConfig
from nats.js.errors import BadRequestError

from orders.model import Order, now_ms

UPDATES_SUBJECT = "orders.updates"
FILLS_SUBJECT = "orders.fills"

log = logging.getLogger(__name__)


def update_subject(symbol: str) -> str:
    return f"{UPDATES_SUBJECT}.{symbol}"


def encode_update(order: Order) -> bytes:
    return json.dumps(
        {"order": order.to_dict(), "update_type": str(order.state), "timestamp": now_ms()},
        separators=(",", ":"),
    ).encode()


def decode_update(data: bytes) -> Order:
    """The order inside an update message; raises ValueError/KeyError if malformed."""
    payload: dict[str, Any] = json.loads(data)
    return Order.from_dict(payload["order"])


class EventBus:
    """A NATS connection with JetStream publishing and core subscriptions."""

    def __init__(self, client: NatsClient, *, stream: str = "ORDERS") -> None:
        self._nc = client
        self._js = client.jetstream()
        self._stream = stream

    @classmethod
    async def connect(cls, address: str, *, stream: str = "ORDERS", ping_interval_s: int = 10) -> EventBus:
        """Connect, and create the JetStream stream if it does not exist yet."""
        client = await nats.connect(
            address,
            ping_interval=ping_interval_s,
            max_reconnect_attempts=-1,
            connect_timeout=2,
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

    async def publish_update(self, order: Order) -> None:
        """Publish one order state; idempotent per (order_id, version)."""
        await self._js.publish(
            update_subject(order.symbol),
            encode_update(order),
            headers={"Nats-Msg-Id": f"{order.order_id}:{order.version}"},
        )

    async def subscribe_updates(self, handler: Callable[[Order], Awaitable[None]]) -> Subscription:
        """Call `handler` for every update on every symbol (core NATS, no replay)."""

        async def on_message(msg: Msg) -> None:
            try:
                order = decode_update(msg.data)
            except (ValueError, KeyError) as exc:
                log.warning("dropping malformed update on %s: %s", msg.subject, exc)
                return
            await handler(order)

        return await self._nc.subscribe(f"{UPDATES_SUBJECT}.*", cb=on_message)

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    async def close(self) -> None:
        await self._nc.drain()
