"""The order store's key layout, and its reads: orders by id, pages of orders, the unsettled.

Layout (prefix = `settings.redis.namespace`):
  {p}:order:{order_id}        hash: data (Order JSON), version
  {p}:client:{client_id}      string: order_id, for CreateOrder idempotency
  {p}:orders                  zset: order_id by created_at (ms)
  {p}:orders:{SYMBOL}         zset: the same, per symbol
  {p}:orders:@{owner}         zset: the same, per owner (the API client that placed it, if any)
  {p}:unsettled               zset: orders not yet settled (see `fsm.is_settled`), by created_at
  {p}:unsent:{SYMBOL}         zset: orders accepted and not yet sent (NEW, SUBMITTING), by created_at
  {p}:unsent                  zset: the same for every symbol
  {p}:outbox                  stream: every change, in commit order (`orders.outbox`)

`OrderStore` (orders/store.py) extends `OrderQueries` with the writes, which its Lua
scripts make to all of these keys in one atomic step. Nothing here changes an order:
the one write, `trim_indexes`, drops index entries whose order has expired.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from orders import metrics
from orders.errors import InvalidOrder, OrderNotFound
from orders.model import Order, OrderState
from orders.store_scripts import FIND_BY_CLIENT_ID


@dataclass(frozen=True, slots=True)
class OrderPage:
    orders: list[Order]
    next_page_token: str


class OrderQueries:
    """Reads of stored orders, and the key layout every store call shares (module docstring)."""

    def __init__(self, client: aioredis.Redis, *, namespace: str = "oe") -> None:
        self._redis = client
        self._prefix = namespace
        self._unsettled_key = f"{namespace}:unsettled"
        self._find_by_client_id = client.register_script(FIND_BY_CLIENT_ID)

    def _order_key(self, order_id: str) -> str:
        return f"{self._prefix}:order:{order_id}"

    def _client_key(self, client_order_id: str) -> str:
        return f"{self._prefix}:client:{client_order_id}"

    def _unsent_key(self, symbol: str = "") -> str:
        return f"{self._prefix}:unsent:{symbol}" if symbol else f"{self._prefix}:unsent"

    async def unsent_counts(self, symbol: str) -> tuple[int, int]:
        """Orders accepted but not yet sent (NEW or SUBMITTING): of `symbol`, and of every symbol."""
        pipe = self._redis.pipeline(transaction=False)
        return self.read_unsent_counts(pipe, symbol)(await pipe.execute())

    def read_unsent_counts(self, pipe: Pipeline, symbol: str) -> Callable[[list[Any]], tuple[int, int]]:
        """Queue `unsent_counts`' reads on `pipe` (to share its round trip); returns their parser,
        which takes the pipeline's results from this call's first command on."""
        pipe.zcard(self._unsent_key(symbol))
        pipe.zcard(self._unsent_key())
        return lambda results: (int(results[0]), int(results[1]))

    def pipeline(self) -> Pipeline:
        """A non-transactional pipeline on the store's connection, for reads batched with others."""
        return self._redis.pipeline(transaction=False)

    def _index_key(self, symbol: str = "") -> str:
        return f"{self._prefix}:orders:{symbol}" if symbol else f"{self._prefix}:orders"

    def _owner_index_key(self, owner: str) -> str:
        """The owner's time index; '@' keeps it apart from symbols (upper-case letters and digits)."""
        return f"{self._prefix}:orders:@{owner}" if owner else self._index_key()

    async def get(self, order_id: str) -> Order:
        """The stored order; raises OrderNotFound."""
        data = await self._redis.hget(self._order_key(order_id), "data")
        if data is None:
            metrics.CACHE_MISSES.labels("orders").inc()
            raise OrderNotFound(order_id)
        metrics.CACHE_HITS.labels("orders").inc()
        return Order.from_json(data)

    async def get_many(self, order_ids: Sequence[str]) -> list[Order]:
        """The stored orders among `order_ids`, in that order; missing ones are left out."""
        return [Order.from_json(data) for data in await self._fetch_data(list(order_ids)) if data is not None]

    async def find_by_client_id(self, client_order_id: str) -> Order | None:
        data = await self._find_by_client_id(
            keys=[self._client_key(client_order_id)], args=[self._order_key("")]
        )
        return Order.from_json(data) if data else None

    async def unsettled(self, *, after: tuple[int, str] | None = None, limit: int = 100) -> list[str]:
        """Ids of orders not yet settled, oldest first, starting after the (created_at, id) `after`."""
        low: str | int = "-inf" if after is None else after[0]
        rows = cast(
            list[tuple[bytes, float]],
            await self._redis.zrangebyscore(
                self._unsettled_key, low, "+inf", start=0, num=limit + 64, withscores=True
            ),
        )
        ids: list[str] = []
        for member, score in rows:
            order_id = _text(member)
            if after is not None and (int(score), order_id) <= after:
                continue
            ids.append(order_id)
            if len(ids) == limit:
                break
        return ids

    async def trim_indexes(self, *, older_than_ms: int, batch: int = 500) -> int:
        """Drop index entries created before `older_than_ms` whose order has expired; returns how many."""
        removed = 0
        for index in [self._index_key(), *await self._narrow_indexes()]:
            rows = cast(
                list[bytes], await self._redis.zrangebyscore(index, "-inf", older_than_ms, start=0, num=batch)
            )
            ids = [_text(member) for member in rows]
            gone = [i for i, data in zip(ids, await self._fetch_data(ids), strict=True) if data is None]
            if gone:
                removed += int(await self._redis.zrem(index, *gone))
        return removed

    async def _narrow_indexes(self) -> list[str]:
        """Every symbol's and every owner's time index."""
        return [_text(k) async for k in self._redis.scan_iter(match=f"{self._index_key()}:*", count=200)]

    async def search(
        self,
        *,
        symbol: str = "",
        states: Sequence[OrderState] = (),
        start_ms: int = 0,
        end_ms: int = 0,
        limit: int = 100,
        page_token: str = "",
        owner: str | None = None,
    ) -> OrderPage:
        """Orders newest first, created in [start_ms, end_ms), filtered by symbol and state,
        and by `owner` unless it is None (then every owner's).

        `page_token` continues a previous call; an empty `next_page_token` means the end.
        """
        # An owner's own index keeps a client with few orders from scanning everyone's.
        index = self._index_key(symbol) if owner is None else self._owner_index_key(owner)
        high: str | int = f"({end_ms}" if end_ms else "+inf"
        seen_score, seen_id = _decode_token(page_token)
        if seen_score is not None:
            high = seen_score
        low: str | int = start_ms if start_ms else "-inf"
        wanted = set(states)
        found: list[Order] = []
        offset = 0
        batch = max(limit * 2, 50)
        last: tuple[int, str] | None = None
        while len(found) < limit:
            rows = cast(
                list[tuple[bytes, float]],
                await self._redis.zrevrangebyscore(
                    index, high, low, start=offset, num=batch, withscores=True
                ),
            )
            if not rows:
                last = None
                break
            offset += len(rows)
            ids = [_text(member) for member, _ in rows]
            datas = await self._fetch_data(ids)
            for (member, score), data in zip(rows, datas, strict=True):
                order_id, created = _text(member), int(score)
                if seen_score is not None and created == seen_score and order_id >= (seen_id or ""):
                    continue
                last = (created, order_id)
                if data is None:
                    continue  # expired between the index read and now
                order = Order.from_json(data)
                if wanted and order.state not in wanted:
                    continue
                if owner is not None and (order.owner != owner or (symbol and order.symbol != symbol)):
                    continue
                found.append(order)
                if len(found) == limit:
                    break
            if len(rows) < batch and len(found) < limit:
                last = None
                break
        token = _encode_token(*last) if last and len(found) == limit else ""
        return OrderPage(found, token)

    async def _fetch_data(self, order_ids: list[str]) -> list[bytes | None]:
        pipe = self._redis.pipeline(transaction=False)
        for order_id in order_ids:
            pipe.hget(self._order_key(order_id), "data")
        return list(await pipe.execute())

    async def ping(self) -> bool:
        return bool(await self._redis.ping())


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _encode_token(score: int, order_id: str) -> str:
    return base64.urlsafe_b64encode(f"{score}:{order_id}".encode()).decode()


def _decode_token(token: str) -> tuple[int | None, str | None]:
    if not token:
        return None, None
    try:
        score, order_id = base64.urlsafe_b64decode(token.encode()).decode().split(":", 1)
        return int(score), order_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidOrder("page_token", "is not a token returned by ListOrders") from exc
