"""The throughput bench's baselines: orders sent to the simulator without the service in between.

On a second simulator account (`Account`), so the service's listener does not see them: a signed
httpx POST /fapi/v1/order on one keep-alive client (the floor of the exchange hop), and ccxt
binanceusdm create_order (what a user without the service would do); one order at a time.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from bench.load_session import Session
from order_execution.exchange.signing import signed_query

BASELINE_N = 200


@dataclass(frozen=True)
class Account:
    """A second simulator account for the baselines: the service's listener does not see its orders."""

    key: str = field(default_factory=lambda: secrets.token_hex(32))
    secret: str = field(default_factory=lambda: secrets.token_hex(32))


def market_order_query(account: Account, session: Session, symbol: str) -> str:
    """The signed query of POST /fapi/v1/order for the session's next MARKET order in `symbol`."""
    return signed_query(
        [
            ("symbol", symbol),
            ("side", session.next_side(symbol)),
            ("type", "MARKET"),
            ("quantity", session.quantities[symbol]),
            ("timestamp", str(int(time.time() * 1000))),
        ],
        account.secret,
    )


async def httpx_baseline(base_url: str, account: Account, session: Session, n: int) -> list[float]:
    """Signed POST /fapi/v1/order MARKET straight to the simulator, one keep-alive client."""
    samples = []
    async with httpx.AsyncClient(
        base_url=base_url, headers={"X-MBX-APIKEY": account.key}, timeout=10
    ) as client:
        for i in range(n + 5):
            symbol = session.symbols[i % len(session.symbols)]
            started = time.perf_counter()
            reply = await client.post(f"/fapi/v1/order?{market_order_query(account, session, symbol)}")
            reply.raise_for_status()
            reply.json()
            if i >= 5:  # the first few warm the connection
                samples.append((time.perf_counter() - started) * 1000)
    return samples


async def ccxt_baseline(
    base_url: str, account: Account, session: Session, names: dict[str, str], n: int
) -> list[float]:
    """ccxt.async_support.binanceusdm create_order, URLs pointed at the simulator (as simulator/tests do)."""
    import ccxt.async_support as ccxt_async

    exchange = ccxt_async.binanceusdm(
        {
            "apiKey": account.key,
            "secret": account.secret,
            "enableRateLimit": False,
            "options": {"fetchCurrencies": False},
        }
    )
    for api, url in list(exchange.urls["api"].items()):
        exchange.urls["api"][api] = base_url + urlsplit(url).path
    samples = []
    try:
        await exchange.load_markets()
        for i in range(n + 5):
            symbol = session.symbols[i % len(session.symbols)]
            side = session.next_side(symbol).lower()
            started = time.perf_counter()
            await exchange.create_order(names[symbol], "market", side, float(session.quantities[symbol]))
            if i >= 5:
                samples.append((time.perf_counter() - started) * 1000)
    finally:
        await exchange.close()
    return samples
