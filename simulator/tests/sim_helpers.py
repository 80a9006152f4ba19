"""Test client for the simulator: signs requests as Binance expects and talks to the admin API."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import httpx
from aiohttp.test_utils import TestServer

from usdm_simulator.app import create_app
from usdm_simulator.config import AccountConfig, SimulatorConfig

# A resting BUY LIMIT for BTCUSDT around the default 50000 reference price.
LIMIT: dict[str, Any] = {
    "side": "BUY",
    "type": "LIMIT",
    "timeInForce": "GTC",
    "quantity": "0.010",
    "price": "49000",
}


async def away_from_window_edge() -> None:
    """Wait if a 10-second window boundary is under a second away (ORDERS windows are wall-clock aligned)."""
    remaining = 10 - time.time() % 10
    if remaining < 1.0:
        await asyncio.sleep(remaining + 0.01)


def new_account() -> AccountConfig:
    """A fresh account with random key and secret."""
    return AccountConfig(key=secrets.token_hex(32), secret=secrets.token_hex(32))


def sign(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


@dataclass
class Sim:
    """A running simulator on a real 127.0.0.1 port plus an httpx client bound to it."""

    server: TestServer
    config: SimulatorConfig
    http: httpx.AsyncClient
    session: aiohttp.ClientSession
    accounts: list[AccountConfig] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}"

    @property
    def account(self) -> AccountConfig:
        return self.accounts[0]

    async def signed(
        self,
        method: str,
        path: str,
        account: AccountConfig | None = None,
        in_body: bool = False,
        **params: Any,
    ) -> httpx.Response:
        """Send a SIGNED request; params go in the query string, or the form body with ``in_body``."""
        acct = account or self.account
        params.setdefault("timestamp", int(time.time() * 1000))
        payload = urlencode({k: str(v) for k, v in params.items()})
        sig = sign(acct.secret, payload)
        headers = {"X-MBX-APIKEY": acct.key}
        if in_body:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            return await self.http.request(
                method, path, content=f"{payload}&signature={sig}", headers=headers
            )
        return await self.http.request(method, f"{path}?{payload}&signature={sig}", headers=headers)

    async def keyed(self, method: str, path: str, account: AccountConfig | None = None) -> httpx.Response:
        """Send an API-key-only (USER_STREAM) request."""
        return await self.http.request(method, path, headers={"X-MBX-APIKEY": (account or self.account).key})

    async def order(self, account: AccountConfig | None = None, **params: Any) -> httpx.Response:
        """POST /fapi/v1/order with BTCUSDT defaults."""
        params.setdefault("symbol", "BTCUSDT")
        return await self.signed("POST", "/fapi/v1/order", account=account, **params)

    async def set_price(self, symbol: str, price: str, **extra: Any) -> dict[str, Any]:
        r = await self.http.post("/admin/price", json={"symbol": symbol, "price": price, **extra})
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    async def admin_get(self, what: str, **params: str) -> Any:
        r = await self.http.get(f"/admin/{what}", params=params)
        assert r.status_code == 200, r.text
        return r.json()

    async def arm(self, **spec: Any) -> dict[str, Any]:
        r = await self.http.post("/admin/faults", json=spec)
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    async def user_stream(
        self, account: AccountConfig | None = None, legacy: bool = False
    ) -> tuple[str, Any]:
        """Create a listenKey and open the websocket; return (key, aiohttp ws)."""
        r = await self.keyed("POST", "/fapi/v1/listenKey", account)
        assert r.status_code == 200, r.text
        key = r.json()["listenKey"]
        url = f"{self.ws_base}/ws/{key}" if legacy else f"{self.ws_base}/private/ws?listenKey={key}"
        ws = await self.session.ws_connect(url)
        return key, ws


def ccxt_client(sim: Sim, module: Any, *, signed: bool = True) -> Any:
    """``module.binanceusdm`` (ccxt.async_support or ccxt.pro) with every fapi URL on ``sim`` and, for
    ccxt.pro, the futures websocket too: what a user changes to trade against the simulator."""
    config: dict[str, Any] = {"enableRateLimit": False, "options": {"fetchCurrencies": False}}
    if signed:
        config.update(apiKey=sim.account.key, secret=sim.account.secret)
    exchange = module.binanceusdm(config)
    for name, url in list(exchange.urls["api"].items()):
        if isinstance(url, str):
            exchange.urls["api"][name] = sim.base_url + urlsplit(url).path
    if "ws" in exchange.urls["api"]:  # ccxt.pro
        exchange.urls["api"]["ws"]["linear"] = f"{sim.ws_base}/ws"
    return exchange


async def start_sim(**overrides: Any) -> Sim:
    """Start a simulator (price frozen, two accounts unless given) on a free 127.0.0.1 port.

    Matching is ``reference`` unless given: most tests check fills at exact prices; the book model has
    its own tests (``test_sim_book_matching.py``).
    """
    accounts = overrides.pop("accounts", None) or [new_account(), new_account()]
    overrides.setdefault("walk_interval_ms", 0)
    overrides.setdefault("matching", "reference")
    config = SimulatorConfig(accounts=accounts, **overrides)
    server = TestServer(create_app(config), host="127.0.0.1", port=0)
    await server.start_server()
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10)
    return Sim(server, config, http, aiohttp.ClientSession(), list(accounts))


async def stop_sim(sim: Sim) -> None:
    await sim.http.aclose()
    await sim.session.close()
    await sim.server.close()


async def next_event(ws: Any, timeout: float = 3.0) -> dict[str, Any]:
    """Receive the next JSON event from an aiohttp websocket."""
    msg = await ws.receive_json(timeout=timeout)
    assert isinstance(msg, dict)
    return msg
