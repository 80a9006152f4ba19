"""The /health checks with an entry per exchange account or per venue: `rate_limits` and `exchange`.

`rate_limits` is unhealthy while any account's budget is blocked (a 429 for its ORDERS or
weight, a 418 ban on its IP); its `accounts` entry has one object per account, by name:

    {"status": "healthy"|"unhealthy", "blocked": bool, "blocked_until_ms"?, "reason"?,
     "weight_1m"|"orders_10s"|"orders_1m": {"used", "limit", "exchange_limit"},
     "tokens", "burst"}

(`limit`: our share of `exchange_limit` after `rate_limit.safety_margin`.) `exchange` pings
`GET /fapi/v1/ping` on every distinct venue (accounts may trade on different REST URLs) and is
unhealthy while any does not answer; its `venues` entry has one object per REST URL:
`{"status", "accounts": [names], "message"?}`. With one account (or one venue) the checks'
messages read as they always did.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp

from order_execution.exchange.rate_budget import RateBudget
from order_execution.gateway.account_budgets import AccountBudget, read_budgets
from order_execution.gateway.probes import CachedProbe, Detailed, Probe
from order_execution.orders.model import DEFAULT_ACCOUNT


class BudgetCheck:
    """The `rate_limits` check over each account's budget (`budgets` by account name, in
    configured order; empty when `rate_limit.enabled` is false)."""

    def __init__(self, budgets: Mapping[str, RateBudget]) -> None:
        self._budgets = dict(budgets)

    async def __call__(self) -> str | Detailed:
        if not self._budgets:
            return "off (rate_limit.enabled: false)"
        budgets = await read_budgets(self._budgets)
        single = [b.account for b in budgets] == [DEFAULT_ACCOUNT]  # one account: said as before
        blocked = [b for b in budgets if b.blocked]
        entries = {"accounts": {b.account: _entry(b) for b in budgets}}
        if blocked:
            message = "; ".join(
                f"every replica holds off sending{'' if single else ' for account ' + b.account}: "
                f"{b.state.blocked_reason}"
                for b in blocked
            )
            return Detailed(message, entries, healthy=False)
        if single:
            return Detailed(_summary(budgets[0]), entries)
        return Detailed("; ".join(f"{b.account}: {_summary(b)}" for b in budgets), entries)


def _summary(budget: AccountBudget) -> str:
    """Used of the exchange's limit per window, and the tokens in the bucket."""
    weight, short, long = budget.windows
    return (
        f"weight {weight.used}/{weight.exchange_limit} per minute, orders {short.used}/"
        f"{short.exchange_limit} per 10 s, {long.used}/{long.exchange_limit} per minute, "
        f"{budget.state.tokens:.1f}/{budget.burst} request tokens"
    )


def _entry(budget: AccountBudget) -> dict[str, object]:
    state = budget.state
    entry: dict[str, object] = {
        "status": "unhealthy" if budget.blocked else "healthy",
        "blocked": budget.blocked,
    }
    if budget.blocked:
        entry["blocked_until_ms"] = state.blocked_until_ms
        entry["reason"] = state.blocked_reason
    for window in budget.windows:
        entry[window.name] = {
            "used": window.used,
            "limit": window.limit,
            "exchange_limit": window.exchange_limit,
        }
    entry["tokens"] = round(state.tokens, 3)
    entry["burst"] = budget.burst
    return entry


class VenuePings:
    """The `exchange` check: `GET /fapi/v1/ping` (weight 1, unsigned) on each venue of `venues`
    (REST URL -> the accounts trading there), concurrently, outside the order path's budgets
    and breakers. Each venue's answer is reused for `cache_s`; each ping gets a little less
    than `timeout_s`, so one silent venue cannot use up the whole check."""

    def __init__(self, venues: Mapping[str, tuple[str, ...]], *, cache_s: float, timeout_s: float) -> None:
        self._venues = dict(venues)
        self._timeout_s = timeout_s * 0.9
        self._session: aiohttp.ClientSession | None = None
        self._probes = {url: CachedProbe(self._pinger(url), cache_s) for url in self._venues}

    async def __call__(self) -> str | Detailed:
        results = await asyncio.gather(*(probe() for probe in self._probes.values()), return_exceptions=True)
        venues: dict[str, dict[str, object]] = {}
        failures: list[str] = []
        for (url, accounts), result in zip(self._venues.items(), results, strict=True):
            entry: dict[str, object] = {"status": "healthy", "accounts": list(accounts)}
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result  # a cancel, not a failed ping
                why = str(result) or type(result).__name__
                entry["status"], entry["message"] = "unhealthy", why
                failures.append(why if len(self._venues) == 1 else f"{why} (accounts {', '.join(accounts)})")
            venues[url] = entry
        if failures:
            return Detailed("; ".join(failures), {"venues": venues}, healthy=False)
        return Detailed(", ".join(self._venues), {"venues": venues})

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _pinger(self, base_url: str) -> Probe:
        async def ping() -> str:
            if self._session is None or self._session.closed:
                self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout_s))
            url = f"{base_url}/fapi/v1/ping"
            try:
                async with self._session.get(url) as response:
                    if response.status != 200:
                        raise ConnectionError(f"{url}: HTTP {response.status}")
            except aiohttp.ClientError as exc:
                raise ConnectionError(f"{url}: {type(exc).__name__}") from exc
            except TimeoutError as exc:
                raise ConnectionError(f"{url}: no answer within {self._timeout_s * 1000:.0f} ms") from exc
            return base_url

        return ping
