"""Rate limits: weight and order-count headers, 429 with -1003/-1015 and Retry-After, then 418."""

from __future__ import annotations

from typing import Any

import pytest

from sim_helpers import LIMIT, Sim, away_from_window_edge
from usdm_simulator.cli import _banner, build_config
from usdm_simulator.config import RateLimitConfig
from usdm_simulator.ratelimit import RateLimiter


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


@pytest.mark.parametrize("flag", [[], ["--no-rate-limits"]])
async def test_burst_gets_429_only_with_limits_on(make_sim: Any, flag: list[str]) -> None:
    await away_from_window_edge()
    limits = ["--orders-per-10s", "3", "--orders-per-minute", "5", "--weight-limit", "4"]
    sim = await make_sim(rate_limits=build_config([*flag, *limits])[0].rate_limits)
    statuses = []
    for i in range(12):
        timed = await sim.http.get("/fapi/v1/time")
        ordered = await sim.order(**{**LIMIT, "price": str(49000 - i)})
        statuses += [timed.status_code, ordered.status_code]
    if not flag:
        assert statuses[:6] == [200] * 6 and {429, 418} & set(statuses)
        return
    assert statuses == [200] * 24
    assert timed.headers["X-MBX-USED-WEIGHT-1M"] == "12"
    assert (ordered.headers["X-MBX-ORDER-COUNT-10S"], ordered.headers["X-MBX-ORDER-COUNT-1M"]) == ("12", "12")
    info = (await sim.http.get("/fapi/v1/exchangeInfo")).json()
    assert [x["limit"] for x in info["rateLimits"]] == [4, 5, 3]


def test_disabled_limiter_only_counts() -> None:
    limits = RateLimitConfig(enabled=False, weight_per_minute=1, orders_per_10s=1, orders_per_minute=1)
    limiter = RateLimiter(limits, now=lambda: 1000.0)
    for _ in range(50):
        limiter.charge_ip("ip", 5)
        limiter.charge_orders("ip", "acct", 1, 1)
    assert limiter.used_weight("ip") == 250
    assert limiter.order_counts("acct") == (50, 50)


def test_banner_states_rate_limit_mode() -> None:
    off, _ = build_config(["--no-rate-limits", "--account", "k:s"])
    assert off.rate_limits.enabled is False
    assert _banner(off, 8090, False).splitlines()[-1].strip() == (
        "rate limits: OFF (--no-rate-limits, load tests only)"
    )
    on, _ = build_config(["--account", "k:s"])
    assert "rate limits: 2400 weight/min per IP" in _banner(on, 8090, False)
