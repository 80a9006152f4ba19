"""Binance's rate limits: request weight per IP per minute, orders per account per 10 s and per minute.

Each account has its own ORDERS limits (``AccountConfig.orders_per_10s`` / ``orders_per_minute``, else
``RateLimitConfig``'s) and its own order counters: one account's burst never counts against another's.
The weight, strikes and bans are per IP, as on Binance: an IP that keeps sending after 429s is banned
whichever account's limit it hit, and the ban stops every account whose requests come from that IP.

Windows are fixed and aligned to wall-clock boundaries (minute, 10 seconds), as Binance's counters are.
Going over a limit answers HTTP 429 (-1003 for weight, -1015 for orders) with ``Retry-After`` in seconds;
an IP that sends more than ``requests_after_429_before_ban`` further requests while limited is banned:
HTTP 418, -1003 "Way too many requests; IP banned until <ms>". Bans escalate for repeat offenders, "from
2 minutes to 3 days" as Binance puts it: the first lasts ``ban_seconds`` (120), each later one
``BAN_ESCALATION`` (4) times the one before, capped at ``MAX_BAN_SECONDS`` (3 days): 2 min, 8 min, 32 min,
~2 h, ~8.5 h, ~34 h, then 3 days. An IP's ban count is forgotten only by ``reset`` (``POST /admin/reset``).

With ``RateLimitConfig.enabled`` false (``--no-rate-limits``, load tests only) the limiter only counts, for
the usual headers: no limit checks, strikes or bans, so never 429 or 418.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from usdm_simulator import errors
from usdm_simulator.config import AccountConfig, RateLimitConfig

BAN_ESCALATION = 4
MAX_BAN_SECONDS = 3 * 24 * 3600


def rate_limit_rules(limits: RateLimitConfig) -> list[dict[str, Any]]:
    """The ``rateLimits`` entries of exchangeInfo for ``limits``: weight per minute, orders per minute and
    per 10 s, in Binance's order and shapes."""
    rules = [
        ("REQUEST_WEIGHT", "MINUTE", 1, limits.weight_per_minute),
        ("ORDERS", "MINUTE", 1, limits.orders_per_minute),
        ("ORDERS", "SECOND", 10, limits.orders_per_10s),
    ]
    return [
        {"rateLimitType": kind, "interval": interval, "intervalNum": count, "limit": limit}
        for kind, interval, count, limit in rules
    ]


@dataclass(frozen=True)
class OrderLimits:
    """An account's ORDERS limits: new orders per 10 seconds and per minute."""

    per_10s: int
    per_minute: int

    def rules(self) -> list[dict[str, Any]]:
        """The account's limits as ``GET /fapi/v1/rateLimit/order`` lists them (10 s first, as Binance)."""
        return [
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": self.per_10s},
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": self.per_minute},
        ]


def order_limits(limits: RateLimitConfig, account: AccountConfig) -> OrderLimits:
    """``account``'s ORDERS limits: its own overrides, else the global ones in ``limits``."""
    return OrderLimits(
        account.orders_per_10s or limits.orders_per_10s, account.orders_per_minute or limits.orders_per_minute
    )


@dataclass
class _Window:
    start: float = 0.0
    used: int = 0

    def add(self, now: float, length: float, amount: int) -> int:
        """Count ``amount`` in the window containing ``now`` (a new window resets); return its total."""
        start = now - (now % length)
        if start != self.start:
            self.start, self.used = start, 0
        self.used += amount
        return self.used

    def retry_after(self, now: float, length: float) -> int:
        return max(1, math.ceil(self.start + length - now))


def _window(table: dict[str, _Window], key: str) -> _Window:
    """Return ``key``'s window in ``table``, adding an empty one the first time."""
    window = table.get(key)
    if window is None:
        window = table[key] = _Window()
    return window


class RateLimiter:
    """Per-IP weight and per-account order counters; ``now`` returns Unix seconds (injectable for tests).

    ``accounts`` may set an account's own ORDERS limits (by its key); any other account has the global
    ``limits``.
    """

    def __init__(
        self,
        limits: RateLimitConfig,
        now: Callable[[], float] = time.time,
        accounts: Iterable[AccountConfig] = (),
    ) -> None:
        self.limits = limits
        self._enforce = limits.enabled
        self._now = now
        self._default_orders = OrderLimits(limits.orders_per_10s, limits.orders_per_minute)
        self._account_orders = {account.key: order_limits(limits, account) for account in accounts}
        self.reset()

    def order_limits(self, account: str) -> OrderLimits:
        """The ORDERS limits of the account with key ``account``."""
        return self._account_orders.get(account, self._default_orders)

    def reset(self) -> None:
        """Zero every counter and lift every ban."""
        self._weight: dict[str, _Window] = {}
        self._orders_10s: dict[str, _Window] = {}
        self._orders_1m: dict[str, _Window] = {}
        self._strikes: dict[str, int] = {}
        self._banned_until: dict[str, float] = {}
        self._bans: dict[str, int] = {}

    def charge_ip(self, ip: str, weight: int) -> int:
        """Charge ``weight`` to the IP's minute window and return the weight used so far.

        Raises 418 while the IP is banned, 429 (-1003) when the minute's weight is exhausted (never with
        limits disabled).
        """
        now = self._now()
        window = _window(self._weight, ip)
        if not self._enforce:
            return window.add(now, 60.0, weight)
        banned = self._banned_until.get(ip, 0.0)
        if banned > now:
            raise self._ban_error(banned, now)
        used = window.add(now, 60.0, weight)
        if used <= self.limits.weight_per_minute:
            self._strikes.pop(ip, None)
            return used
        self._strike(ip, now)
        err = errors.too_many_requests(self.limits.weight_per_minute)
        err.retry_after_s = window.retry_after(now, 60.0)
        raise err

    def used_weight(self, ip: str) -> int:
        """Return the IP's weight used in the current minute."""
        window = self._weight.get(ip)
        now = self._now()
        return window.used if window and window.start == now - (now % 60.0) else 0

    def charge_orders(self, ip: str, account: str, count_10s: int, count_1m: int) -> tuple[int, int]:
        """Count new orders for ``account`` (its key); return (used in 10 s, used in 1 min).

        Raises 429 (-1015) when either of the account's windows is exhausted (and counts a strike against
        the IP, which may ban it: 418); never with limits disabled.
        """
        now = self._now()
        limits = self.order_limits(account)
        w10, w60 = _window(self._orders_10s, account), _window(self._orders_1m, account)
        used10, used60 = w10.add(now, 10.0, count_10s), w60.add(now, 60.0, count_1m)
        if not self._enforce:
            return used10, used60
        if used10 > limits.per_10s:
            self._strike(ip, now)
            err = errors.too_many_orders(limits.per_10s, "10 SECOND")
            err.retry_after_s = w10.retry_after(now, 10.0)
            raise err
        if used60 > limits.per_minute:
            self._strike(ip, now)
            err = errors.too_many_orders(limits.per_minute, "1 MINUTE")
            err.retry_after_s = w60.retry_after(now, 60.0)
            raise err
        return used10, used60

    def order_counts(self, account: str) -> tuple[int, int]:
        """Return the account's (10 s, 1 min) order counts in the current windows."""
        now = self._now()
        w10, w60 = self._orders_10s.get(account), self._orders_1m.get(account)
        c10 = w10.used if w10 and w10.start == now - (now % 10.0) else 0
        c60 = w60.used if w60 and w60.start == now - (now % 60.0) else 0
        return c10, c60

    def _strike(self, ip: str, now: float) -> None:
        strikes = self._strikes.get(ip, 0) + 1
        self._strikes[ip] = strikes
        if strikes > self.limits.requests_after_429_before_ban + 1:
            self._strikes.pop(ip, None)
            until = now + self.ban_seconds(self._bans.get(ip, 0) + 1)
            self._bans[ip] = self._bans.get(ip, 0) + 1
            self._banned_until[ip] = until
            raise self._ban_error(until, now)

    def ban_seconds(self, nth: int) -> int:
        """Length of an IP's ``nth`` ban (1-based): ``ban_seconds`` x ``BAN_ESCALATION``^(nth-1), at most
        ``MAX_BAN_SECONDS``."""
        first = self.limits.ban_seconds
        if nth <= 1:
            return min(first, MAX_BAN_SECONDS)
        return int(min(first * BAN_ESCALATION ** min(nth - 1, 32), MAX_BAN_SECONDS))

    def bans(self, ip: str) -> int:
        """How many times ``ip`` has been banned since the last reset."""
        return self._bans.get(ip, 0)

    @staticmethod
    def _ban_error(until: float, now: float) -> errors.BinanceError:
        err = errors.ip_banned(int(until * 1000))
        err.retry_after_s = max(1, math.ceil(until - now))
        return err
