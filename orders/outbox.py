"""The outbox: every stored order change, in commit order, as a Redis stream.

The order store's scripts append one entry per change in the same atomic step as the
change itself (`{namespace}:outbox`, fields `order` = the Order JSON, `was` = the state
before the change, "" for a new order, and, when the change recorded trades, `fills` =
those fills' JSON). So no change exists without its event and
no event without its change, whether or not NATS is up.

Readers:
* the gateway's update streams read it directly (`read_stored_after`, `range_after`): each
  version once, in order, and a client resumes from the entry id it got last;
* the listener's relay reads it through a consumer group (`read_group`, `ack`) and
  publishes each entry to JetStream.
The tail and the relay get the entries as stored (`StoredEntry`, bytes, not decoded): the relay
publishes from the bytes, and the gateway decodes an entry once, only when a stream is open.

Entries are trimmed by age (`performance.update_retention_s`): the id of an entry is the
Redis time it was written at, so trimming is `XADD ... MINID ~ <now - retention>`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from order_execution.orders.errors import InvalidOrder, ResumePointExpired
from order_execution.orders.model import Fill, Order, OrderState, now_ms
from order_execution.orders.store_outages import store_adapter
from order_execution.runtime.redis_connection import reply_text

_Rows = list[tuple[bytes, dict[bytes, bytes]]]
_StreamReply = list[tuple[bytes, _Rows]]

_MAX_ID_PART = 2**64 - 1  # a Redis stream id is two unsigned 64-bit numbers
_ENTRY_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")  # fullmatch: `$` would let a trailing "\n" in


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One order change: the order as it became, the state it left, and the trades it recorded."""

    entry_id: str
    order: Order
    fills: tuple[Fill, ...] = ()
    was: OrderState | None = None

    @property
    def update_type(self) -> str:
        """What happened: the state moved to, else TRADE (trades recorded) or UPDATE.

        So a strategy sees FILLED once, even when its trades are recorded afterwards.
        """
        if self.was is not self.order.state:
            return str(self.order.state)
        return "TRADE" if self.fills else "UPDATE"


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """One outbox entry as Redis holds it: its id and its fields' bytes, not decoded."""

    entry_id: str
    order: bytes
    """The Order JSON (`Order.to_json`)."""
    was: bytes = b""
    """The state before the change; empty for a new order."""
    fills: bytes = b""
    """The JSON array of the trades the change recorded (`encode_fills`); empty if none."""

    def decode(self) -> OutboxEntry:
        """The entry decoded; raises ValueError/KeyError if it is malformed."""
        fills = tuple(Fill.from_dict(f) for f in orjson.loads(self.fills)) if self.fills else ()
        return OutboxEntry(
            self.entry_id,
            Order.from_json(self.order),
            fills,
            OrderState(self.was.decode()) if self.was else None,
        )


def outbox_key(namespace: str) -> str:
    return f"{namespace}:outbox"


def encode_fills(fills: tuple[Fill, ...]) -> str:
    return orjson.dumps([f.to_dict() for f in fills]).decode() if fills else ""


@store_adapter
class Outbox:
    """Read access to the outbox stream (the store writes it)."""

    def __init__(self, client: aioredis.Redis, *, namespace: str = "oe", retention_s: int = 86400) -> None:
        self._redis = client
        self.key = outbox_key(namespace)
        self._retention_ms = retention_s * 1000

    def trim_before(self) -> str:
        """The MINID below which entries may be trimmed now."""
        return f"{now_ms() - self._retention_ms}-0"

    def check_resume_token(self, token: str) -> str:
        """Validate a client's resume token (an entry id) and return it.

        Raises InvalidOrder if it is not an entry id, ResumePointExpired if it is older
        than the retention, so updates after it may have been trimmed.
        """
        if not _ENTRY_ID.fullmatch(token):
            raise InvalidOrder("resume_token", "must be an OrderUpdate.resume_token received earlier")
        written_ms, sequence = (int(part) for part in token.split("-", 1))
        if max(written_ms, sequence) > _MAX_ID_PART:
            raise InvalidOrder("resume_token", "each part must fit in 64 bits (an entry id received earlier)")
        if written_ms < now_ms() - self._retention_ms:
            raise ResumePointExpired(
                f"resume_token {token} is older than the {self._retention_ms // 1000} s of updates kept; "
                "re-read current state with ListOrders and stream from now"
            )
        return token

    async def last_id(self) -> str:
        """The id of the newest entry, or "0-0" for an empty stream."""
        rows = cast(_Rows, await self._redis.xrevrange(self.key, count=1))
        return reply_text(rows[0][0]) if rows else "0-0"

    async def range_after(self, after_id: str, *, count: int = 500) -> list[OutboxEntry]:
        """Up to `count` entries written after `after_id`, oldest first."""
        rows = cast(_Rows, await self._redis.xrange(self.key, min=f"({after_id}", count=count))
        return [_decode(entry_id, fields) for entry_id, fields in rows]

    async def replay_after(self, after_id: str, *, page: int = 500) -> AsyncGenerator[OutboxEntry, None]:
        """Every entry written after `after_id`, oldest first, read `page` at a time.

        Each entry is decoded only when the caller asks for it, so a reader that stops
        early (its stream overflowed) stops the decoding there too.
        """
        cursor = after_id
        while True:
            rows = cast(_Rows, await self._redis.xrange(self.key, min=f"({cursor}", count=page))
            for entry_id, fields in rows:
                yield _decode(entry_id, fields)
            if len(rows) < page:
                return
            cursor = reply_text(rows[-1][0])

    async def read_after(self, after_id: str, *, count: int = 500, block_ms: int = 1000) -> list[OutboxEntry]:
        """Entries after `after_id`, waiting up to `block_ms` for the first one."""
        return [
            entry.decode() for entry in await self.read_stored_after(after_id, count=count, block_ms=block_ms)
        ]

    async def read_stored_after(
        self, after_id: str, *, count: int = 500, block_ms: int = 1000
    ) -> list[StoredEntry]:
        """`read_after`, not decoded."""
        reply = cast(_StreamReply, await self._redis.xread({self.key: after_id}, count=count, block=block_ms))
        return [_stored(entry_id, fields) for _, rows in reply or () for entry_id, fields in rows]

    # --- consumer group (the relay) -------------------------------------------------

    async def ensure_group(self, group: str) -> None:
        """Create `group` at the start of the stream unless it exists."""
        try:
            await self._redis.xgroup_create(self.key, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def pending(self, group: str, consumer: str, *, count: int = 500) -> list[StoredEntry]:
        """Entries delivered to any consumer of `group` but not acked, taken over by `consumer`.

        A relay that died leaves its entries pending; the next one claims them first, so
        nothing is skipped.
        """
        reply: list[Any] = await self._redis.xautoclaim(
            self.key, group, consumer, min_idle_time=0, count=count
        )
        rows = cast(_Rows, reply[1] if len(reply) > 1 else [])
        return [_stored(entry_id, fields) for entry_id, fields in rows if fields]

    async def read_group(
        self,
        group: str,
        consumer: str,
        *,
        count: int = 500,
        block_ms: int = 1000,
        ack_first: Sequence[str] = (),
    ) -> list[StoredEntry]:
        """New entries for `consumer` of `group`, waiting up to `block_ms`.

        `ack_first` are entry ids to ack in the same round trip, before reading.
        """
        pipe = self._redis.pipeline(transaction=False)
        if ack_first:
            pipe.xack(self.key, group, *ack_first)
        pipe.xreadgroup(group, consumer, {self.key: ">"}, count=count, block=block_ms)
        reply = cast(_StreamReply, (await pipe.execute())[-1])
        return [_stored(entry_id, fields) for _, rows in reply or () for entry_id, fields in rows]

    async def ack(self, group: str, entry_ids: list[str]) -> None:
        if entry_ids:
            await self._redis.xack(self.key, group, *entry_ids)


def _stored(entry_id: bytes | str, fields: dict[bytes, bytes]) -> StoredEntry:
    return StoredEntry(
        reply_text(entry_id), fields[b"order"], fields.get(b"was") or b"", fields.get(b"fills") or b""
    )


def _decode(entry_id: bytes | str, fields: dict[bytes, bytes]) -> OutboxEntry:
    return _stored(entry_id, fields).decode()
