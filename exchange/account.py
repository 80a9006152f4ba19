"""Build the exchange client every process uses: the shared rate budget and breakers wired in.

Budgets and breakers are per account (a short hash of the API key), so several accounts
can share one Redis without sharing limits.
"""

from __future__ import annotations

import hashlib

import redis.asyncio as aioredis

from order_execution.exchange.breakers import Breakers
from order_execution.exchange.client import BinanceClient
from order_execution.exchange.rate_budget import RateBudget
from order_execution.runtime.settings import Settings


def account_id(settings: Settings) -> str:
    """A stable, non-secret name for the configured API key."""
    return hashlib.sha256(settings.exchange.api_key.get_secret_value().encode()).hexdigest()[:12]


def breaker_namespace(settings: Settings) -> str:
    """The Redis key prefix of the account's breakers: `redis.namespace`, then `account_id`.

    The breakers (`breakers` below) write their state under it; the gateway's admission and
    cluster gauges read it from there.
    """
    return f"{settings.redis.namespace}:{account_id(settings)}"


def rate_budget(client: aioredis.Redis, settings: Settings) -> RateBudget | None:
    """The account's shared budget, or None when `rate_limit.enabled` is false."""
    if not settings.rate_limit.enabled:
        return None
    limits = settings.rate_limit
    return RateBudget(
        client,
        namespace=settings.redis.namespace,
        account=account_id(settings),
        requests_per_second=limits.requests_per_second,
        burst=limits.burst,
        safety_margin=limits.safety_margin,
        cancel_reserve=limits.cancel_reserve,
    )


def breakers(client: aioredis.Redis, settings: Settings, *, sync_in_background: bool = True) -> Breakers:
    """The account's endpoint breakers, shared through `client`.

    Their state is kept in memory and synced with Redis by a background task (see
    exchange/breakers.py), each round bounded by `redis.socket_timeout_ms`, so a slow or
    frozen Redis never holds an exchange request. `sync_in_background` False: no task, the
    caller syncs around its calls (`Breakers.try_sync`).
    """
    return Breakers(
        settings.circuit_breaker,
        client=client,
        namespace=breaker_namespace(settings),
        sync_timeout_s=settings.redis.socket_timeout_ms / 1000,
        sync_in_background=sync_in_background,
    )


def exchange_client(
    client: aioredis.Redis, settings: Settings, *, breakers_in_background: bool = True
) -> BinanceClient:
    """The REST client with the shared budget and breakers; its `close` stops the breakers' sync.

    `breakers_in_background` False: the breakers have no sync task (see `breakers`); for a
    client that calls the exchange rarely, which syncs them around each call itself.
    """
    return BinanceClient.from_settings(
        settings.exchange,
        budget=rate_budget(client, settings),
        breakers=breakers(client, settings, sync_in_background=breakers_in_background),
    )
