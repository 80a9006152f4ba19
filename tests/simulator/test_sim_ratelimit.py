"""Rate limits: weight and order-count headers, 429 with -1003/-1015 and Retry-After, then 418."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from simulator.config import RateLimitConfig
from simulator.ratelimit import RateLimiter
from tests.simulator.sim_helpers import LIMIT, Sim


async def away_from_window_edge() -> None:
    """Wait if a 10-second window boundary is under a second away (windows are wall-clock aligned)."""
    remaining = 10 - time.time() % 10
    if remaining < 1.0:
        await asyncio.sleep(remaining + 0.01)


async def test_weight_headers_follow_endpoint_weights(sim: Sim) -> None:
    await away_from_window_edge()
    r = await sim.http.get("/fapi/v1/time")
    assert r.headers["X-MBX-USED-WEIGHT-1M"] == "1"
    r = await sim.signed("GET", "/fapi/v1/openOrders")
    assert r.headers["X-MBX-USED-WEIGHT-1M"] == "41"
    r = await sim.signed("GET", "/fapi/v1/openOrders", symbol="BTCUSDT")
    assert r.headers["X-MBX-USED-WEIGHT-1M"] == "42"
    r = await sim.signed("GET", "/fapi/v2/account")
    assert r.headers["X-MBX-USED-WEIGHT-1M"] == "47"
    r = await sim.order(**LIMIT)
    assert r.headers["X-MBX-USED-WEIGHT-1M"] == "47"
    assert (r.headers["X-MBX-ORDER-COUNT-10S"], r.headers["X-MBX-ORDER-COUNT-1M"]) == ("1", "1")
    r = await sim.signed(
        "POST",
        "/fapi/v1/batchOrders",
        batchOrders='[{"symbol":"BTCUSDT","side":"BUY",'
        '"type":"LIMIT","timeInForce":"GTC","quantity":"0.010","price":"48000"}]',
    )
    assert r.headers["X-MBX-USED-WEIGHT-1M"] == "52"
    assert (r.headers["X-MBX-ORDER-COUNT-10S"], r.headers["X-MBX-ORDER-COUNT-1M"]) == ("6", "2")
    r = await sim.signed("GET", "/fapi/v1/order", symbol="BTCUSDT", orderId=1)
    assert "X-MBX-ORDER-COUNT-10S" not in r.headers


async def test_weight_429_then_418(make_sim: Any) -> None:
    await away_from_window_edge()
    sim = await make_sim(
        rate_limits={"weight_per_minute": 3, "requests_after_429_before_ban": 2, "ban_seconds": 120}
    )
    for _ in range(3):
        assert (await sim.http.get("/fapi/v1/time")).status_code == 200
    statuses = []
    for _ in range(3):
        r = await sim.http.get("/fapi/v1/time")
        statuses.append(r.status_code)
        assert r.json()["code"] == -1003
        assert r.json()["msg"].startswith("Too many requests; current limit is 3 requests per minute.")
        assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert statuses == [429, 429, 429]
    r = await sim.http.get("/fapi/v1/time")
    assert r.status_code == 418
    body = r.json()
    assert body["code"] == -1003 and body["msg"].startswith("Way too many requests; IP banned until ")
    assert 100 <= int(r.headers["Retry-After"]) <= 120
    r = await sim.signed("GET", "/fapi/v2/account")
    assert r.status_code == 418
    await sim.http.post("/admin/reset")
    assert (await sim.http.get("/fapi/v1/time")).status_code == 200


async def test_order_count_429(make_sim: Any) -> None:
    await away_from_window_edge()
    sim = await make_sim(rate_limits={"orders_per_10s": 2, "orders_per_minute": 100})
    for i in range(2):
        assert (await sim.order(**{**LIMIT, "price": str(49000 - i)})).status_code == 200
    r = await sim.order(**LIMIT, newClientOrderId="too-many")
    assert r.status_code == 429
    assert r.json() == {"code": -1015, "msg": "Too many new orders; current limit is 2 orders per 10 SECOND."}
    assert "Retry-After" in r.headers and r.headers["X-MBX-ORDER-COUNT-10S"] == "3"
    assert await sim.admin_get("orders", clientOrderId="too-many") == []
    # Order limits are per account.
    assert (await sim.order(account=sim.accounts[1], **LIMIT)).status_code == 200


async def test_orders_per_minute(make_sim: Any) -> None:
    await away_from_window_edge()
    sim = await make_sim(rate_limits={"orders_per_10s": 100, "orders_per_minute": 1})
    assert (await sim.order(**LIMIT)).status_code == 200
    r = await sim.order(**LIMIT)
    assert r.json() == {"code": -1015, "msg": "Too many new orders; current limit is 1 orders per 1 MINUTE."}


def test_windows_roll_over() -> None:
    now = [1000.0]
    limiter = RateLimiter(RateLimitConfig(weight_per_minute=2), now=lambda: now[0])
    assert limiter.charge_ip("ip", 2) == 2
    now[0] += 60
    assert limiter.charge_ip("ip", 1) == 1


async def test_rate_limits_in_exchange_info(make_sim: Any) -> None:
    sim = await make_sim(rate_limits={"weight_per_minute": 50, "orders_per_10s": 7, "orders_per_minute": 9})
    info = (await sim.http.get("/fapi/v1/exchangeInfo")).json()
    assert [x["limit"] for x in info["rateLimits"]] == [50, 9, 7]
