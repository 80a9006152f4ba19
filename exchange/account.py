"""Build the exchange clients every process uses: each account's shared rate budget, and the
venue's breakers, wired in.

Budgets are per account (a short hash of its API key: two names for one key share one
budget, as they share Binance's), with the REQUEST_WEIGHT window per egress IP
(`accounts[].egress`). Circuit breakers are per venue (the REST URL): an exchange that fails
fails for every account, so one account's failures open the breaker for all of them, and a
process keeps one `Breakers` per venue, shared by its accounts' clients.
"""

from __future__ import annotations

import hashlib

import redis.asyncio as aioredis

from order_execution.exchange.breakers import Breakers
from order_execution.exchange.client import BinanceClient
from order_execution.exchange.rate_budget import RateBudget
from order_execution.runtime.settings import Account, Settings


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def account_id(account: Account) -> str:
    """A stable, non-secret name for the account's API key."""
    return _short_hash(account.exchange.api_key.get_secret_value())


def breaker_namespace(settings: Settings, account: Account | None = None) -> str:
    """The Redis key prefix of the breakers of `account`'s venue (default: the first account's):
    `redis.namespace`, then a hash of the REST URL.

    The breakers (`breakers` below) write their state under it; the gateway's admission and
    cluster gauges read it from there.
    """
    account = account or settings.trading_accounts[0]
    return f"{settings.redis.namespace}:venue:{_short_hash(account.exchange.rest_url)}"


def venues(settings: Settings) -> dict[str, tuple[str, ...]]:
    """Each distinct venue (REST URL) and the accounts that trade there, both in configured order."""
    found: dict[str, list[str]] = {}
    for account in settings.trading_accounts:
        found.setdefault(account.exchange.rest_url, []).append(account.name)
    return {url: tuple(names) for url, names in found.items()}


def breaker_namespaces(settings: Settings) -> list[str]:
    """The breakers' Redis key prefix of each distinct venue, in configured order."""
    return list(dict.fromkeys(breaker_namespace(settings, account) for account in settings.trading_accounts))


def rate_budget(client: aioredis.Redis, settings: Settings, account: Account) -> RateBudget | None:
    """`account`'s shared budget, or None when `rate_limit.enabled` is false."""
    if not settings.rate_limit.enabled:
        return None
    limits = settings.rate_limit
    return RateBudget(
        client,
        namespace=settings.redis.namespace,
        account=account_id(account),
        egress=account.egress,
        requests_per_second=limits.requests_per_second,
        burst=limits.burst,
        safety_margin=limits.safety_margin,
        cancel_reserve=limits.cancel_reserve,
    )


def breakers(
    client: aioredis.Redis, settings: Settings, account: Account, *, sync_in_background: bool = True
) -> Breakers:
    """The endpoint breakers of `account`'s venue, shared through `client`.

    Their state is kept in memory and synced with Redis by a background task (see
    exchange/breakers.py), each round bounded by `redis.socket_timeout_ms`, so a slow or
    frozen Redis never holds an exchange request. `sync_in_background` False: no task, the
    caller syncs around its calls (`Breakers.try_sync`).
    """
    return Breakers(
        settings.circuit_breaker,
        client=client,
        namespace=breaker_namespace(settings, account),
        sync_timeout_s=settings.redis.socket_timeout_ms / 1000,
        sync_in_background=sync_in_background,
    )


def exchange_clients(
    client: aioredis.Redis, settings: Settings, *, breakers_in_background: bool = True
) -> dict[str, BinanceClient]:
    """Every account's REST client by account name, with its budget and its venue's breakers
    (one `Breakers` per venue, shared), its metrics labelled with the account's name; each
    client's `close` stops the breakers' sync.

    `breakers_in_background` False: the breakers have no sync task (see `breakers`); for
    clients that call the exchange rarely, which sync them around each call themselves.
    """
    by_venue: dict[str, Breakers] = {}
    clients: dict[str, BinanceClient] = {}
    for account in settings.trading_accounts:
        venue = breaker_namespace(settings, account)
        if venue not in by_venue:
            by_venue[venue] = breakers(client, settings, account, sync_in_background=breakers_in_background)
        clients[account.name] = BinanceClient.from_settings(
            account.exchange,
            budget=rate_budget(client, settings, account),
            breakers=by_venue[venue],
            account=account.name,
        )
    return clients
