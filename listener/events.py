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

The relay builds an entry's messages from its stored bytes (`entry_messages`: the order's JSON is
spliced in as stored, the same bytes `encode_update`/`encode_fill` make of the decoded order), and
publishes a whole batch at once (`EventBus.publish_batch`): the messages are written together and
their acks come back to one inbox of the connection, where one wait collects them all.

The connection is given every server (`nats.servers`, else `nats.address`), learns the rest of a
cluster from the servers' INFO, and reconnects forever, to whichever server answers; while it is
away, publishes wait in nats-py's buffer and their acks time out, so the caller retries them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import StreamConfig
from nats.js.errors import APIError, BadRequestError, NoStreamResponseError

from order_execution.orders.model import Fill, Order, now_ms
from order_execution.orders.outbox import StoredEntry
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


@dataclass(frozen=True, slots=True)
class Message:
    """One JetStream message to publish: its subject, body and `Nats-Msg-Id`."""

    subject: str
    body: bytes
    msg_id: str


# The keys `Order.to_dict` and `Fill.to_dict` write. A stored order or fill with exactly these is
# spliced in as stored; one written by an older version (other keys), or with no account (which
# the model reads as the default one), goes through the model, so its message carries what the
# model fills in, as when every entry was decoded.
_ORDER_KEYS = frozenset(f.name for f in dataclasses.fields(Order))
_FILL_KEYS = frozenset(f.name for f in dataclasses.fields(Fill))


def entry_messages(entry: StoredEntry) -> list[Message]:
    """The messages of one outbox entry, in publishing order: a fill message per trade it
    recorded, then the update.

    Built from the stored bytes with one JSON parse and no `Order`: the bodies are byte for byte
    what `encode_fill` and `encode_update` make of the decoded entry. Raises ValueError/KeyError
    if the entry is malformed.
    """
    order: dict[str, Any] = orjson.loads(entry.order)
    fills: list[dict[str, Any]] = orjson.loads(entry.fills) if entry.fills else []
    stored: orjson.Fragment | dict[str, Any] = orjson.Fragment(entry.order)
    if order.keys() != _ORDER_KEYS or not order["account"]:
        order = Order.from_dict(order).to_dict()
        stored = order
    order_id = order["order_id"]
    state = order["state"]
    messages = []
    if fills:
        fill_subject_ = f"{FILLS_SUBJECT}.{order['symbol']}"
        for fill in fills:
            if fill.keys() != _FILL_KEYS:
                fill = Fill.from_dict(fill).to_dict()
            body = {
                "order_id": order_id,
                "client_order_id": order["client_order_id"],
                "symbol": order["symbol"],
                "side": order["side"],
                "fill": fill,
                "order": stored,
            }
            messages.append(Message(fill_subject_, orjson.dumps(body), f"{order_id}:fill:{fill['trade_id']}"))
    # `OutboxEntry.update_type`: the state moved to, else TRADE (trades recorded) or UPDATE.
    update_type = state if entry.was.decode() != state else "TRADE" if fills else "UPDATE"
    body = {"order": stored, "update_type": update_type, "timestamp": order["updated_at"] or now_ms()}
    messages.append(
        Message(f"{UPDATES_SUBJECT}.{order['symbol']}", orjson.dumps(body), f"{order_id}:{order['version']}")
    )
    return messages


def order_messages(order: Order, fills: tuple[Fill, ...] = (), update_type: str = "") -> list[Message]:
    """The messages of one order version and the trades it recorded (see `entry_messages`)."""
    messages = [
        Message(
            fill_subject(order.symbol), encode_fill(order, fill), f"{order.order_id}:fill:{fill.trade_id}"
        )
        for fill in fills
    ]
    messages.append(
        Message(
            update_subject(order.symbol),
            encode_update(order, update_type),
            f"{order.order_id}:{order.version}",
        )
    )
    return messages


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
        # The inbox JetStream acks the batches to ("" until the first batch subscribes it), and
        # the batches waiting for their acks by number.
        self._ack_inbox = ""
        self._batches: dict[str, _Batch] = {}
        self._next_batch = 0

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
        errors = await self.publish_batch(order_messages(order, fills, update_type), timeout_s=timeout_s)
        for error in errors:
            if error is not None:
                raise error

    async def publish_batch(
        self, messages: Sequence[Message], *, timeout_s: float = 2.0
    ) -> list[Exception | None]:
        """Publish `messages`, in order, and wait up to `timeout_s` for all JetStream's acks at once.

        Returns, per message, None if JetStream acked it (stored, or a repeat of a stored id),
        else the error: its refusal, no responders, TimeoutError when no ack came, or what
        publishing raised (disconnected with a full buffer, closed). Once publishing one raises,
        the rest are not sent and carry the same error, so a retry keeps them in order.
        """
        if not messages:
            return []
        inbox = await self._ack_inbox_subscribed()
        number = str(self._next_batch)
        self._next_batch += 1
        batch = _Batch(len(messages))
        self._batches[number] = batch
        try:
            reply_prefix = f"{inbox}.{number}."
            for index, message in enumerate(messages):
                try:
                    await self._nc.publish(
                        message.subject,
                        message.body,
                        reply=f"{reply_prefix}{index}",
                        headers={"Nats-Msg-Id": message.msg_id},
                    )
                except Exception as exc:  # nats-py raises several unrelated types while reconnecting
                    batch.unsent(index, exc)
                    break
            if batch.waiting:
                await asyncio.wait((batch.done,), timeout=timeout_s)
        finally:
            del self._batches[number]  # an ack that comes later finds no batch and is dropped
        return batch.outcomes()

    async def _ack_inbox_subscribed(self) -> str:
        """The inbox JetStream acks batches to: `<inbox>.<batch>.<index>`, subscribed on first use
        (nats-py subscribes it again after a reconnect)."""
        if not self._ack_inbox:
            inbox = self._nc.new_inbox()
            await self._nc.subscribe(f"{inbox}.*.*", cb=self._on_ack)
            self._ack_inbox = inbox
        return self._ack_inbox

    async def _on_ack(self, msg: Msg) -> None:
        _, number, index = msg.subject.rsplit(".", 2)
        batch = self._batches.get(number)
        if batch is not None:
            batch.answered(int(index), _ack_error(msg))

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


class _Batch:
    """The acks of one `publish_batch`: an outcome per message, and `done` once none is awaited."""

    __slots__ = ("_outcomes", "done", "waiting")

    def __init__(self, size: int) -> None:
        self._outcomes: list[Exception | _NoAck | None] = [_NO_ACK] * size
        self.waiting = size
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def answered(self, index: int, error: Exception | None) -> None:
        if self._outcomes[index] is not _NO_ACK:
            return  # a second answer to the same message: the first counts
        self._outcomes[index] = error
        self.waiting -= 1
        if not self.waiting and not self.done.done():
            self.done.set_result(None)

    def unsent(self, first: int, error: Exception) -> None:
        """Messages `first`.. were not sent: each fails with `error`."""
        for index in range(first, len(self._outcomes)):
            self.answered(index, error)

    def outcomes(self) -> list[Exception | None]:
        return [
            TimeoutError("no ack from JetStream") if isinstance(outcome, _NoAck) else outcome
            for outcome in self._outcomes
        ]


class _NoAck:
    """No answer yet."""


_NO_ACK = _NoAck()


def _ack_error(msg: Msg) -> Exception | None:
    """None if `msg` is JetStream's ack of a publish (`{"stream": ..., "seq": ...}`), else the error
    it carries: a refusal (`{"error": ...}`) or no responders (status 503: no stream took it)."""
    if msg.headers and msg.headers.get("Status") == "503":
        return NoStreamResponseError()
    try:
        reply = orjson.loads(msg.data)
    except orjson.JSONDecodeError:
        reply = None
    if isinstance(reply, dict) and "stream" in reply and "error" not in reply:
        return None
    error = reply.get("error") if isinstance(reply, dict) else None
    if isinstance(error, dict):
        return APIError(
            code=error.get("code"), err_code=error.get("err_code"), description=error.get("description")
        )
    return APIError(description=f"not a publish ack: {msg.data[:200]!r}")


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
