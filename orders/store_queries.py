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

The client-id keys and the unsent indexes are per exchange account, as Binance's client
order ids and ORDERS limits are: the account `default` uses the names above, any other
account `{p}:@{account}:client:{client_id}`, `{p}:@{account}:unsent:{SYMBOL}` and
`{p}:@{account}:unsent` (`account_prefix`).

`OrderStore` (orders/store.py) extends `OrderQueries` with the writes, which its Lua
scripts make to all of these keys in one atomic step. Nothing here changes an order:
the one write, `trim_indexes`, drops index entries whose order has expired.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from order_execution.orders import fsm, metrics
from order_execution.orders.account_keys import account_prefix
from order_execution.orders.errors import InvalidOrder, OrderNotFound
from order_execution.orders.fsm import ExchangeReport
from order_execution.orders.model import DEFAULT_ACCOUNT, Order, OrderState, decimal_str
from order_execution.orders.store_outages import store_adapter
from order_execution.orders.store_scripts import FIND_BY_CLIENT_ID, FIND_FOR_REPORT
from order_execution.runtime.redis_connection import reply_text

# FIND_FOR_REPORT's ARGV[3]: per reported state, the stored states it leaves as they are.
_LEFT_AS_THEY_ARE = {
    reported: "," + ",".join(s for s in OrderState if not fsm.report_moves(s, reported)) + ","
    for reported in OrderState
}
# Index entries one `search` call reads at most unless told (`server.list_scan_cap`).
DEFAULT_SCAN_CAP = 2000
# Most index entries read (and orders fetched) in one round trip.
_INDEX_BATCH = 500

# The entries of a time index after one of its members, newest first; nil if the member is gone.
# One script, so that no order created in between shifts the ranks under the page.
_ROWS_AFTER = """
local rank = redis.call('ZREVRANK', KEYS[1], ARGV[1])
if not rank then return false end
return redis.call('ZREVRANGE', KEYS[1], rank + 1, rank + tonumber(ARGV[2]), 'WITHSCORES')
"""


@dataclass(frozen=True, slots=True)
class OrderPage:
    """One page of `OrderQueries.search`: an empty `next_page_token` means there is no more."""

    orders: list[Order]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class ReportLookup:
    """What `OrderQueries.find_for_report` found: the order, when the report may change it;
    None with `reflected` when the stored order already shows all the report says (it was not
    sent back); None without, when no order of the account has that client id."""

    order: Order | None
    reflected: bool = False


@dataclass(frozen=True, slots=True)
class _Window:
    """Creation times [start_ms, end_ms) in Unix ms; 0 = no bound."""

    start_ms: int
    end_ms: int

    @property
    def high(self) -> str:
        return f"({self.end_ms}" if self.end_ms else "+inf"

    @property
    def low(self) -> str | int:
        return self.start_ms if self.start_ms else "-inf"

    def holds(self, created_ms: int) -> bool:
        return created_ms >= self.start_ms and (not self.end_ms or created_ms < self.end_ms)


@store_adapter
class OrderQueries:
    """Reads of stored orders, and the key layout every store call shares (module docstring)."""

    def __init__(self, client: aioredis.Redis, *, namespace: str = "oe") -> None:
        self._redis = client
        self._prefix = namespace
        self._unsettled_key = f"{namespace}:unsettled"
        self._find_by_client_id = client.register_script(FIND_BY_CLIENT_ID)
        self._find_for_report = client.register_script(FIND_FOR_REPORT)
        self._rows_after = client.register_script(_ROWS_AFTER)

    def _order_key(self, order_id: str) -> str:
        return f"{self._prefix}:order:{order_id}"

    def _client_key(self, client_order_id: str, account: str) -> str:
        return f"{account_prefix(self._prefix, account)}:client:{client_order_id}"

    def _unsent_key(self, account: str, symbol: str = "") -> str:
        prefix = account_prefix(self._prefix, account)
        return f"{prefix}:unsent:{symbol}" if symbol else f"{prefix}:unsent"

    async def unsent_counts(self, symbol: str, account: str = DEFAULT_ACCOUNT) -> tuple[int, int]:
        """The account's orders accepted but not yet sent (NEW or SUBMITTING): of `symbol`, and of
        every symbol."""
        pipe = self._redis.pipeline(transaction=False)
        of_symbols, of_account = self.read_unsent_counts(pipe, [symbol], account)(await pipe.execute())
        return of_symbols[symbol], of_account

    def read_unsent_counts(
        self, pipe: Pipeline, symbols: Sequence[str], account: str = DEFAULT_ACCOUNT
    ) -> Callable[[list[Any]], tuple[dict[str, int], int]]:
        """Queue the reads of the account's unsent counts of each of `symbols` and of every symbol
        on `pipe` (to share its round trip: len(symbols) + 1 commands); returns their parser,
        which takes the pipeline's results from this call's first command on."""
        symbols = tuple(symbols)
        for symbol in symbols:
            pipe.zcard(self._unsent_key(account, symbol))
        pipe.zcard(self._unsent_key(account))
        return lambda results: (
            {symbol: int(count) for symbol, count in zip(symbols, results, strict=False)},
            int(results[len(symbols)]),
        )

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

    async def find_by_client_id(self, client_order_id: str, account: str = DEFAULT_ACCOUNT) -> Order | None:
        """The order of `account` that `client_order_id` names (ids are unique per account), if any."""
        data = await self._find_by_client_id(
            keys=[self._client_key(client_order_id, account)], args=[self._order_key("")]
        )
        return Order.from_json(data) if data else None

    async def find_for_report(
        self, client_order_id: str, report: ExchangeReport, *, symbol: str, account: str = DEFAULT_ACCOUNT
    ) -> ReportLookup:
        """`find_by_client_id`, for applying `report` (news of `symbol`) to the order: in the same
        round trip Redis checks whether the stored order already reflects the report (exactly
        when `fsm.apply_report` would change nothing; `orders.store_scripts.FIND_FOR_REPORT`), and
        then answers `reflected` without the order. An order of another symbol is returned as
        found, for the caller to judge."""
        keys, args = self._report_lookup(client_order_id, report, symbol, account)
        return _lookup_answer(await self._find_for_report(keys=keys, args=args))

    async def find_for_reports(
        self, lookups: Sequence[tuple[str, ExchangeReport | None, str]], account: str = DEFAULT_ACCOUNT
    ) -> list[ReportLookup]:
        """`find_for_report` of each (client order id, report, symbol) in `lookups`, in one round
        trip; a None report looks the order up whatever it holds (`find_by_client_id`)."""
        calls: list[tuple[AsyncScript, list[str]]] = []
        for client_order_id, report, symbol in lookups:
            if report is None:
                keys, args = [self._client_key(client_order_id, account)], [self._order_key("")]
                calls.append((self._find_by_client_id, [*keys, *args]))
            else:
                keys, args = self._report_lookup(client_order_id, report, symbol, account)
                calls.append((self._find_for_report, [*keys, *args]))
        for _ in range(2):
            # EVALSHA, not the scripts' own pipelined call: that asks SCRIPT EXISTS first, a round
            # trip of its own each time.
            pipe = self._redis.pipeline(transaction=False)
            for script, keys_and_args in calls:
                pipe.evalsha(script.sha, 1, *keys_and_args)
            answers = await pipe.execute(raise_on_error=False)
            if not any(isinstance(answer, NoScriptError) for answer in answers):
                break
            for script in {script for script, _ in calls}:
                await self._redis.script_load(script.script)  # a restarted or new primary
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
        return [_lookup_answer(answer) for answer in answers]

    def _report_lookup(
        self, client_order_id: str, report: ExchangeReport, symbol: str, account: str
    ) -> tuple[list[str], list[str]]:
        """KEYS and ARGV of FIND_FOR_REPORT."""
        keys = [self._client_key(client_order_id, account)]
        args = [
            self._order_key(""),
            symbol,
            _LEFT_AS_THEY_ARE[report.state],
            decimal_str(report.filled_quantity),
            report.exchange_order_id,
            report.algo_id,
            *(fill.trade_id for fill in report.fills),
        ]
        return keys, args

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
            order_id = reply_text(member)
            if after is not None and (int(score), order_id) <= after:
                continue
            ids.append(order_id)
            if len(ids) == limit:
                break
        return ids

    async def unsettled_orders(self, *, batch: int = DEFAULT_SCAN_CAP) -> AsyncIterator[list[Order]]:
        """Every order not yet settled (every open order among them), newest first, `batch` at a
        time: one index read and one pipelined fetch per batch, so memory holds one batch.

        The walk continues exactly after the last order it yielded (keyset), even while orders
        settle and leave the index; an order created meanwhile may be left out, and one may
        have settled since it was read (check its state).
        """
        everything = _Window(0, 0)
        position: tuple[int, str] | None = None
        while True:
            rows, _, more = await self._index_rows(self._unsettled_key, everything, position, batch)
            if rows:
                position = (rows[-1][1], rows[-1][0])
                datas = await self._fetch_data([order_id for order_id, _ in rows])
                yield [Order.from_json(data) for data in datas if data is not None]
            if not more or not rows:
                return

    async def trim_indexes(self, *, older_than_ms: int, batch: int = 500) -> int:
        """Drop index entries created before `older_than_ms` whose order has expired; returns how many."""
        removed = 0
        for index in [self._index_key(), *await self._narrow_indexes()]:
            rows = cast(
                list[bytes], await self._redis.zrangebyscore(index, "-inf", older_than_ms, start=0, num=batch)
            )
            ids = [reply_text(member) for member in rows]
            gone = [i for i, data in zip(ids, await self._fetch_data(ids), strict=True) if data is None]
            if gone:
                removed += int(await self._redis.zrem(index, *gone))
        return removed

    async def _narrow_indexes(self) -> list[str]:
        """Every symbol's and every owner's time index."""
        return [reply_text(k) async for k in self._redis.scan_iter(match=f"{self._index_key()}:*", count=200)]

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
        accounts: Collection[str] | None = None,
        scan_cap: int = DEFAULT_SCAN_CAP,
    ) -> OrderPage:
        """Orders newest first, created in [start_ms, end_ms), filtered by symbol and state,
        by `owner` unless it is None (then every owner's), and to the exchange `accounts`
        unless None (then every account's).

        One call reads at most `scan_cap` index entries (and the orders they name): when it
        has read that many before finding `limit` matches, it returns the matches it has (a
        short or even empty page) with a `next_page_token` that continues after the last entry
        read. `page_token` continues a previous call exactly (keyset: after its (created_at,
        order_id), ties on one millisecond included); only an empty `next_page_token` means
        the end. The account filter applies to the orders read, so the cap and the token count
        every entry read, whatever its account. Raises InvalidOrder for a token this method
        did not return.
        """
        # An owner's own index keeps a client with few orders from scanning everyone's.
        index = self._index_key(symbol) if owner is None else self._owner_index_key(owner)
        window = _Window(start_ms, end_ms)
        position = _decode_token(page_token)
        wanted = set(states)
        found: list[Order] = []
        examined = 0
        batch = min(max(limit * 2, 50), _INDEX_BATCH)  # a filter that matches often: one round trip
        while examined < scan_cap:
            want = min(batch, scan_cap - examined)
            rows, read, more = await self._index_rows(index, window, position, want)
            examined += read
            batch = min(batch * 2, _INDEX_BATCH)
            for (order_id, created), data in zip(
                rows, await self._fetch_data([i for i, _ in rows]), strict=True
            ):
                position = (created, order_id)
                if data is None:
                    continue  # expired between the index read and now
                order = Order.from_json(data)
                if wanted and order.state not in wanted:
                    continue
                if owner is not None and (order.owner != owner or (symbol and order.symbol != symbol)):
                    continue
                if accounts is not None and order.account not in accounts:
                    continue
                found.append(order)
                if len(found) == limit:
                    return OrderPage(found, _encode_token(*position))
            if not more:
                return OrderPage(found, "")
        # The cap, before `limit` matches: the caller continues from the last entry read.
        return OrderPage(found, _encode_token(*position) if position else "")

    async def _index_rows(
        self, index: str, window: _Window, position: tuple[int, str] | None, want: int
    ) -> tuple[list[tuple[str, int]], int, bool]:
        """Up to `want` entries of `index` (order_id, created_at) after `position`, newest first,
        inside `window`; with how many entries were read and whether there may be more."""
        if position is None:
            raw = cast(
                list[tuple[bytes, float]],
                await self._redis.zrevrangebyscore(
                    index, window.high, window.low, start=0, num=want, withscores=True
                ),
            )
            rows = [(reply_text(member), int(score)) for member, score in raw]
            return rows, len(rows), len(rows) == want
        flat = await self._rows_after(keys=[index], args=[position[1], want])
        if flat is None:
            return await self._rows_below_missing(index, window, position, want)
        pairs = [(reply_text(flat[i]), int(float(flat[i + 1]))) for i in range(0, len(flat), 2)]
        inside = [(order_id, created) for order_id, created in pairs if window.holds(created)]
        # The index is newest first: the first entry older than the window ends it.
        ended = len(pairs) < want or any(created < window.start_ms for _, created in pairs)
        return inside, len(pairs), not ended

    async def _rows_below_missing(
        self, index: str, window: _Window, position: tuple[int, str], want: int
    ) -> tuple[list[tuple[str, int]], int, bool]:
        """`_index_rows` when the entry at `position` is gone (its order expired between pages):
        from its millisecond on, skipping the ids of that millisecond already passed (a tie on
        one millisecond lists in descending id order)."""
        score, seen_id = position
        for high in (score, f"({score}"):
            raw = cast(
                list[tuple[bytes, float]],
                await self._redis.zrevrangebyscore(
                    index, high, window.low, start=0, num=want, withscores=True
                ),
            )
            pairs = [(reply_text(member), int(created)) for member, created in raw]
            rows = [(i, c) for i, c in pairs if not (c == score and i >= seen_id)]
            # A whole batch of passed ties (more than `want` orders in one millisecond) would be
            # read again forever: step below that millisecond instead.
            if rows or len(pairs) < want:
                return rows, len(pairs), len(pairs) == want
        return rows, len(pairs), len(pairs) == want

    async def _fetch_data(self, order_ids: list[str]) -> list[bytes | None]:
        pipe = self._redis.pipeline(transaction=False)
        for order_id in order_ids:
            pipe.hget(self._order_key(order_id), "data")
        return list(await pipe.execute())

    async def ping(self) -> bool:
        return bool(await self._redis.ping())


def _lookup_answer(answer: bytes | int | None) -> ReportLookup:
    """A ReportLookup from FIND_FOR_REPORT's (or FIND_BY_CLIENT_ID's) answer."""
    if isinstance(answer, int):
        return ReportLookup(None, reflected=True)
    return ReportLookup(Order.from_json(answer) if answer else None)


def _encode_token(score: int, order_id: str) -> str:
    return base64.urlsafe_b64encode(f"{score}:{order_id}".encode()).decode()


def _decode_token(token: str) -> tuple[int, str] | None:
    if not token:
        return None
    try:
        score, order_id = base64.urlsafe_b64decode(token.encode()).decode().split(":", 1)
        return int(score), order_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidOrder("page_token", "is not a token returned by ListOrders") from exc
