"""The account's request budget, shared by every process through Redis.

Binance counts per fixed window on its own clock: REQUEST_WEIGHT per minute per IP, and
ORDERS per 10 s and per minute per account (limits from exchangeInfo `rateLimits`).
We keep the same counters in Redis, plus the configured token bucket
(`rate_limit.requests_per_second` / `burst`), and every request any replica makes first
`acquire`s its cost: one Lua round trip that either charges every budget at once or
charges nothing and says how long to wait. So no replica can overdraw what another one
spent.

* Limits are the exchange's times `safety_margin` (the counters we cannot see, such as
  another client's, are corrected from the response headers: `correct`).
* Creates and queries leave `cancel_reserve` of the bucket and of the weight window
  untouched, so neither a flood of creates nor a reconciliation sweep starves cancels.
* `block` stops everyone until a time: after a 429 (its Retry-After) or a 418 ban.

Binance counts REQUEST_WEIGHT per IP and ORDERS per account, so the weight window (and a
block for the IP: a ban, a weight 429) lives under the `egress` the account leaves through,
shared by every account on it, and the rest under the account.

Windows use the caller's exchange time (local clock + measured offset), so they line up
with the exchange's.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from order_execution.orders.model import now_ms

WEIGHT_WINDOW_MS = 60_000
ORDERS_SHORT_WINDOW_MS = 10_000
ORDERS_LONG_WINDOW_MS = 60_000
# Clocks and flight times blur window edges this much: header figures near an edge are not used.
_BOUNDARY_MARGIN_MS = 250
_LIMITS_RELOAD_S = 5.0


class Priority(StrEnum):
    CREATE = "create"
    CANCEL = "cancel"  # the only one that may use the cancel reserve
    QUERY = "query"


@dataclass(frozen=True, slots=True)
class ExchangeLimits:
    """The exchange's own limits (exchangeInfo `rateLimits`); Binance's published defaults."""

    weight_per_minute: int = 2400
    orders_per_10s: int = 300
    orders_per_minute: int = 1200

    @classmethod
    def from_exchange_info(cls, rate_limits: list[dict[str, Any]]) -> ExchangeLimits:
        """Read the REQUEST_WEIGHT and ORDERS rows (interval and intervalNum); other rows are ignored."""
        found: dict[str, int] = {}
        for row in rate_limits:
            span_s = int(row.get("intervalNum", 1)) * {"SECOND": 1, "MINUTE": 60, "DAY": 86400}.get(
                str(row.get("interval")), 0
            )
            kind, limit = row.get("rateLimitType"), int(row.get("limit", 0))
            if kind == "REQUEST_WEIGHT" and span_s == 60:
                found["weight_per_minute"] = limit
            elif kind == "ORDERS" and span_s == 10:
                found["orders_per_10s"] = limit
            elif kind == "ORDERS" and span_s == 60:
                found["orders_per_minute"] = limit
        return cls(**found)


@dataclass(frozen=True, slots=True)
class Cost:
    """What one request spends: request weight, and orders (1 for a new order)."""

    weight: int = 1
    orders: int = 0


@dataclass(frozen=True, slots=True)
class BudgetState:
    """A read-only look at the budget, for admission and health."""

    tokens: float
    weight_used: int
    orders_10s: int
    orders_1m: int
    blocked_until_ms: int
    blocked_reason: str


# KEYS: 1 bucket hash, 2 weight window, 3 orders 10 s window, 4 orders 1 m window, 5 block hash,
# 6 the egress IP's block hash.
# ARGV: 1 now, 2 rate/s, 3 burst, 4 reserve tokens, 5 weight, 6 weight limit, 7 orders,
# 8 orders/10s limit, 9 orders/1m limit, 10..12 window ends (weight, 10 s, 1 m).
_ACQUIRE = """
local now = tonumber(ARGV[1])
local blocked = math.max(tonumber(redis.call('HGET', KEYS[5], 'until') or '0'),
  tonumber(redis.call('HGET', KEYS[6], 'until') or '0'))
if blocked > now then return {blocked - now, 'blocked'} end
local rate, burst, reserve = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1] or ARGV[3])
local ts = tonumber(b[2] or ARGV[1])
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local wait, why = 0, ''
if tokens - 1 < reserve then
  wait = math.ceil((1 + reserve - tokens) * 1000 / rate)
  why = 'requests_per_second'
end
local weight = tonumber(ARGV[5])
-- A weight-0 request (a new order) is still held once the window is spent: the exchange
-- answers 429 to anything from an IP over its limit.
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
if used + weight > tonumber(ARGV[6]) or (weight == 0 and used >= tonumber(ARGV[6])) then
  local w = tonumber(ARGV[10]) - now
  if w > wait then wait, why = w, 'REQUEST_WEIGHT per minute' end
end
local orders = tonumber(ARGV[7])
if orders > 0 then
  if tonumber(redis.call('GET', KEYS[3]) or '0') + orders > tonumber(ARGV[8]) then
    local w = tonumber(ARGV[11]) - now
    if w > wait then wait, why = w, 'ORDERS per 10 s' end
  end
  if tonumber(redis.call('GET', KEYS[4]) or '0') + orders > tonumber(ARGV[9]) then
    local w = tonumber(ARGV[12]) - now
    if w > wait then wait, why = w, 'ORDERS per minute' end
  end
end
if wait > 0 then return {wait, why} end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - 1), 'ts', ARGV[1])
redis.call('PEXPIRE', KEYS[1], 3600000)
if weight > 0 then
  redis.call('INCRBY', KEYS[2], weight)
  redis.call('PEXPIREAT', KEYS[2], tonumber(ARGV[10]) + 60000)
end
if orders > 0 then
  redis.call('INCRBY', KEYS[3], orders)
  redis.call('PEXPIREAT', KEYS[3], tonumber(ARGV[11]) + 60000)
  redis.call('INCRBY', KEYS[4], orders)
  redis.call('PEXPIREAT', KEYS[4], tonumber(ARGV[12]) + 60000)
end
return {0, ''}
"""

# KEYS: counters; ARGV: pairs of (value, expire-at ms), one per key. Raise only.
_CORRECT = """
for i, key in ipairs(KEYS) do
  local seen = tonumber(ARGV[2 * i - 1])
  if seen > tonumber(redis.call('GET', key) or '0') then
    redis.call('SET', key, seen)
    redis.call('PEXPIREAT', key, tonumber(ARGV[2 * i]))
  end
end
return 1
"""

# KEYS[1] block hash; ARGV: until ms, reason. Only ever extends.
_BLOCK = """
if tonumber(ARGV[1]) > tonumber(redis.call('HGET', KEYS[1], 'until') or '0') then
  redis.call('HSET', KEYS[1], 'until', ARGV[1], 'reason', ARGV[2])
  redis.call('PEXPIREAT', KEYS[1], tonumber(ARGV[1]) + 60000)
end
return 1
"""


@dataclass(frozen=True, slots=True)
class Grant:
    """The answer to `acquire`: 0 ms means charged; otherwise nothing was charged."""

    wait_ms: int
    limited_by: str = ""


class RateBudget:
    """The shared budget of one account and IP (see the module docstring)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        namespace: str = "oe",
        account: str = "default",
        egress: str = "default",
        requests_per_second: float = 10,
        burst: int = 20,
        safety_margin: float = 0.9,
        cancel_reserve: float = 0.2,
        limits: ExchangeLimits | None = None,
    ) -> None:
        self._redis = client
        self._prefix = f"{namespace}:rl:{account}"
        self._egress_prefix = f"{namespace}:rl:egress:{egress}"
        self.requests_per_second = requests_per_second
        self.burst = burst
        self.safety_margin = safety_margin
        self.cancel_reserve = cancel_reserve
        self.limits = limits or ExchangeLimits()
        # Given limits are kept; otherwise the shared ones are read on first use, then every few s.
        self._limits_loaded = time.monotonic() if limits is not None else float("-inf")
        self._acquire = client.register_script(_ACQUIRE)
        self._correct = client.register_script(_CORRECT)
        self._block = client.register_script(_BLOCK)

    @property
    def limits_key(self) -> str:
        return f"{self._prefix}:limits"

    def _window(self, name: str, span_ms: int, at_ms: int) -> tuple[str, int]:
        start = at_ms - at_ms % span_ms
        prefix = self._egress_prefix if name == "w1m" else self._prefix
        return f"{prefix}:{name}:{start}", start + span_ms

    def effective(self, limit: int, priority: Priority) -> int:
        """A limit after the safety margin, and after the cancel reserve for all but cancels."""
        share = self.safety_margin * (1 if priority is Priority.CANCEL else 1 - self.cancel_reserve)
        return max(1, math.floor(limit * share))

    async def acquire(self, cost: Cost, priority: Priority, *, at_ms: int | None = None) -> Grant:
        """Charge `cost` to every budget at once, or nothing and say how long to wait (ms)."""
        await self.refresh_limits()
        now = now_ms() if at_ms is None else at_ms
        weight_key, weight_end = self._window("w1m", WEIGHT_WINDOW_MS, now)
        short_key, short_end = self._window("o10s", ORDERS_SHORT_WINDOW_MS, now)
        long_key, long_end = self._window("o1m", ORDERS_LONG_WINDOW_MS, now)
        reserve = 0 if priority is Priority.CANCEL else self.burst * self.cancel_reserve
        wait, why = await self._acquire(
            keys=[
                f"{self._prefix}:bucket",
                weight_key,
                short_key,
                long_key,
                f"{self._prefix}:block",
                f"{self._egress_prefix}:block",
            ],
            args=[
                now,
                self.requests_per_second,
                self.burst,
                reserve,
                cost.weight,
                self.effective(self.limits.weight_per_minute, priority),
                cost.orders,
                self.effective(self.limits.orders_per_10s, priority),
                self.effective(self.limits.orders_per_minute, priority),
                weight_end,
                short_end,
                long_end,
            ],
        )
        return Grant(int(wait), why.decode() if isinstance(why, bytes) else str(why))

    async def correct(
        self,
        *,
        weight_1m: int | None,
        orders_10s: int | None,
        orders_1m: int | None,
        at_ms: int | None = None,
        answered_ms: int | None = None,
    ) -> None:
        """Raise our counters to what the exchange reports (X-MBX-* headers); never lowers them.

        `at_ms` is when the request left, `answered_ms` when its answer came (exchange
        time). A figure is only trusted for a window the whole exchange sat well inside: one
        counted in the previous window must not fill the new one.
        """
        now = now_ms() if at_ms is None else at_ms
        answered = now if answered_ms is None else answered_ms
        keys: list[str] = []
        args: list[int] = []
        for value, name, span in (
            (weight_1m, "w1m", WEIGHT_WINDOW_MS),
            (orders_10s, "o10s", ORDERS_SHORT_WINDOW_MS),
            (orders_1m, "o1m", ORDERS_LONG_WINDOW_MS),
        ):
            start = now - now % span
            inside = start + _BOUNDARY_MARGIN_MS <= now and answered < start + span - _BOUNDARY_MARGIN_MS
            if value is not None and value >= 0 and inside:
                key, end = self._window(name, span, now)
                keys.append(key)
                args += [value, end + 60_000]
        if keys:
            await self._correct(keys=keys, args=args)

    async def block(self, until_ms: int, reason: str, *, whole_ip: bool = False) -> None:
        """Stop every replica from sending for this account until `until_ms` (a 429 for ORDERS);
        `whole_ip`: for every account on its egress IP (a 418 ban, a 429 for weight)."""
        prefix = self._egress_prefix if whole_ip else self._prefix
        await self._block(keys=[f"{prefix}:block"], args=[until_ms, reason])

    async def state(self, *, at_ms: int | None = None) -> BudgetState:
        """The budget as it stands (tokens refilled to now), without charging anything."""
        pipe = self._redis.pipeline(transaction=False)
        read = self.read_state(pipe, at_ms=now_ms() if at_ms is None else at_ms)
        return read(await pipe.execute())

    def read_state(self, pipe: Pipeline, *, at_ms: int) -> Callable[[list[Any]], BudgetState]:
        """Queue the reads of `state` on `pipe` (to share its round trip); returns their parser.

        The parser takes the pipeline's results from this call's first command on.
        """
        pipe.hmget(f"{self._prefix}:bucket", ["tokens", "ts"])
        for name, span in (
            ("w1m", WEIGHT_WINDOW_MS),
            ("o10s", ORDERS_SHORT_WINDOW_MS),
            ("o1m", ORDERS_LONG_WINDOW_MS),
        ):
            pipe.get(self._window(name, span, at_ms)[0])
        pipe.hmget(f"{self._prefix}:block", ["until", "reason"])
        pipe.hmget(f"{self._egress_prefix}:block", ["until", "reason"])

        def parse(results: list[Any]) -> BudgetState:
            bucket, weight, short, long, own_block, ip_block = results[:6]
            block = max(own_block, ip_block, key=lambda b: int(b[0] or 0))
            tokens = float(bucket[0]) if bucket[0] is not None else float(self.burst)
            if bucket[1] is not None:
                refill = max(0, at_ms - int(bucket[1])) * self.requests_per_second / 1000
                tokens = min(self.burst, tokens + refill)
            until = int(block[0] or 0)
            return BudgetState(
                tokens=tokens,
                weight_used=int(weight or 0),
                orders_10s=int(short or 0),
                orders_1m=int(long or 0),
                blocked_until_ms=until if until > at_ms else 0,
                blocked_reason=(block[1] or b"").decode() if until > at_ms else "",
            )

        return parse

    async def save_limits(self, limits: ExchangeLimits) -> None:
        """Share the exchange's limits (read from exchangeInfo by the workers) with every process."""
        self.limits = limits
        self._limits_loaded = time.monotonic()
        await self._redis.set(self.limits_key, json.dumps(dataclasses.asdict(limits)))

    async def load_limits(self) -> ExchangeLimits:
        """The shared limits, or Binance's defaults until a worker has read exchangeInfo."""
        raw = await self._redis.get(self.limits_key)
        if raw:
            self.limits = ExchangeLimits(**json.loads(raw))
        self._limits_loaded = time.monotonic()
        return self.limits

    async def refresh_limits(self) -> None:
        """Re-read the shared limits if the copy here is older than a few seconds."""
        if time.monotonic() - self._limits_loaded > _LIMITS_RELOAD_S:
            await self.load_limits()
