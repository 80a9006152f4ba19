"""The event bus: order updates and fills out over NATS JetStream.

Only the listener's outbox relay publishes (no order waits on NATS). Per stored change:
* `orders.updates.<SYMBOL>`: `{"order": {...}, "update_type": ..., "timestamp": <ms>}`, where
  `update_type` is the state moved to, or TRADE (trades recorded) or UPDATE (same state),
  with `Nats-Msg-Id: <order_id>:<version>`;
* `orders.fills.<SYMBOL>`, one per trade the change recorded:
  `{"order_id", "client_order_id", "symbol", "side", "fill": {...}, "order": {...}}` with
  `Nats-Msg-Id: <order_id>:fill:<trade_id>`.
The ids make a re-publish after a crash, a retry or a NATS node's failover a no-op within the
stream's duplicate window (`DUPLICATE_WINDOW_S`, 2 minutes; a node's failover takes seconds).
Both go to the JetStream stream `settings.nats.stream`, kept at `settings.nats.replicas` copies.

The connection is given every server (`nats.servers`, else `nats.address`), learns the rest of a
cluster from the servers' INFO, and reconnects forever, to whichever server answers; while it is
away, publishes wait in nats-py's buffer and their acks time out, so the caller retries them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from nats.aio.client import Client as NatsClient
from nats.js.api import StreamConfig
from nats.js.errors import APIError, BadRequestError

from order_execution.orders.model import Fill, Order, now_ms
from order_execution.runtime.addresses import nats_servers

UPDATES_SUBJECT = "orders.updates"
FILLS_SUBJECT = "orders.fills"
DUPLICATE_WINDOW_S = 120.0
"""How long JetStream remembers a Nats-Msg-Id: a re-publish within it is stored once."""
RECONNECT_WAIT_S = 1
"""Between two attempts at the same server (the next server in the pool is tried at once)."""

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

    def __init__(self, client: NatsClient, *, stream: str = "ORDERS", replicas: int = 1) -> None:
        self._nc = client
        self._js = client.jetstream()
        self._stream = stream
        self._replicas = replicas

    @classmethod
    async def connect(
        cls,
        address: str,
        *,
        stream: str = "ORDERS",
        replicas: int = 1,
        ping_interval_s: int = 10,
        user: str = "",
        password: str = "",
    ) -> EventBus:
        """Connect, and create the JetStream stream (or bring its config, replicas included, up to date).

        `address` is one NATS URL or several, comma-separated, optionally with percent-encoded
        `user:password@`; `user`/`password` given here win over those. The credentials go to
        the server apart from the URLs, decoded, so no character in them is special, and serve
        for the servers discovered too. Waits until a server answers; raises (the connection
        closed) if the stream cannot be set up, e.g. more `replicas` than the cluster has nodes.
        """
        servers = nats_servers(address)
        if password:
            user_given, password_given = user, password
        else:
            user_given, password_given = servers.user, servers.password
        client = NatsClient()
        await client.connect(
            servers.urls,
            ping_interval=ping_interval_s,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=RECONNECT_WAIT_S,
            connect_timeout=2,
            user=user_given or None,
            password=password_given or None,
            **_connection_logging(client),
        )
        bus = cls(client, stream=stream, replicas=replicas)
        try:
            await bus.ensure_stream()
        except BaseException:
            await client.close()
            raise
        log.info("NATS: connected to %s", client.connected_url.netloc if client.connected_url else "?")
        return bus

    async def ensure_stream(self) -> None:
        """Create the stream, or update it to this config (NATS moves an existing one to `replicas`)."""
        config = StreamConfig(
            name=self._stream,
            subjects=[f"{UPDATES_SUBJECT}.>", f"{FILLS_SUBJECT}.>"],
            duplicate_window=DUPLICATE_WINDOW_S,
            max_age=7 * 86400.0,
            num_replicas=self._replicas,
        )
        try:
            try:
                await self._js.add_stream(config)
            except BadRequestError:
                await self._js.update_stream(config)
        except APIError as exc:
            raise RuntimeError(
                f"JetStream stream {self._stream} with nats.replicas={self._replicas}: {exc.description} "
                f"(error {exc.err_code})"
            ) from exc

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

    @property
    def server(self) -> str:
        """host:port of the server this connection is on now ("" while it reconnects)."""
        url = self._nc.connected_url
        return url.netloc if url is not None and self._nc.is_connected else ""

    async def close(self) -> None:
        await self._nc.drain()


def _connection_logging(client: NatsClient) -> dict[str, Any]:
    """nats-py callbacks that log what the connection does: lost, back (on which server), new servers."""

    async def disconnected() -> None:
        if not client.is_closed:  # nats-py calls this on close() too; `closed` says that one
            log.warning("NATS: connection lost; reconnecting to any of the servers")

    async def reconnected() -> None:
        url = client.connected_url
        log.warning("NATS: reconnected to %s", url.netloc if url is not None else "?")

    async def discovered() -> None:
        log.info("NATS: servers known: %s", ", ".join(url.netloc for url in client.servers))

    async def error(exc: Exception) -> None:
        log.warning("NATS: %s", exc if str(exc) else type(exc).__name__)

    async def closed() -> None:
        log.info("NATS: connection closed")

    return {
        "disconnected_cb": disconnected,
        "reconnected_cb": reconnected,
        "discovered_server_cb": discovered,
        "error_cb": error,
        "closed_cb": closed,
    }
