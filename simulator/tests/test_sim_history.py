"""allOrders / userTrades paging by id and time (7-day windows), and escalating IP bans."""

from __future__ import annotations

from typing import Any

import pytest

from sim_helpers import LIMIT, Sim
from usdm_simulator.admin import STATE_KEY
from usdm_simulator.config import RateLimitConfig
from usdm_simulator.errors import BinanceError
from usdm_simulator.ratelimit import MAX_BAN_SECONDS, RateLimiter

HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS


async def _advance(sim: Sim, ms: int) -> None:
    assert (await sim.http.post("/admin/clock", json={"advance_ms": ms})).status_code == 200


async def _orders_an_hour_apart(sim: Sim, count: int) -> list[dict[str, Any]]:
    placed = []
    for n in range(count):
        r = await sim.order(**{**LIMIT, "price": str(49000 - n * 100)})
        assert r.status_code == 200, r.text
        placed.append(r.json())
        await _advance(sim, HOUR_MS)
    return placed


async def _ids(sim: Sim, path: str, key: str, **params: Any) -> list[int]:
    r = await sim.signed("GET", path, symbol="BTCUSDT", **params)
    assert r.status_code == 200, r.text
    return [row[key] for row in r.json()]


async def test_all_orders_pages_by_order_id_and_time(sim: Sim) -> None:
    placed = await _orders_an_hour_apart(sim, 5)
    ids = [o["orderId"] for o in placed]
    times = [o["updateTime"] for o in placed]
    assert await _ids(sim, "/fapi/v1/allOrders", "orderId") == ids
    assert await _ids(sim, "/fapi/v1/allOrders", "orderId", limit=2) == ids[3:]  # the newest
    assert await _ids(sim, "/fapi/v1/allOrders", "orderId", orderId=ids[1], limit=2) == ids[1:3]
    assert await _ids(sim, "/fapi/v1/allOrders", "orderId", startTime=times[2], limit=2) == ids[2:4]
    assert await _ids(sim, "/fapi/v1/allOrders", "orderId", startTime=times[1], endTime=times[2]) == ids[1:3]
    assert await _ids(sim, "/fapi/v1/allOrders", "orderId", endTime=times[1]) == ids[:2]
    r = await sim.signed("GET", "/fapi/v1/allOrders", symbol="BTCUSDT", startTime=0, endTime=8 * DAY_MS)
    assert r.json()["code"] == -1127
    # Eight days later the default window (last 7 days) is empty; paging by id still finds the orders.
    await _advance(sim, 8 * DAY_MS)
    assert await _ids(sim, "/fapi/v1/allOrders", "orderId") == []
    assert await _ids(sim, "/fapi/v1/allOrders", "orderId", orderId=ids[0]) == ids


async def test_all_orders_forgets_unfilled_canceled_orders_after_three_days(sim: Sim) -> None:
    placed = await _orders_an_hour_apart(sim, 2)
    r = await sim.signed("DELETE", "/fapi/v1/order", symbol="BTCUSDT", orderId=placed[0]["orderId"])
    assert r.status_code == 200
    await _advance(sim, 3 * DAY_MS)
    assert await _ids(sim, "/fapi/v1/allOrders", "orderId", orderId=1) == [placed[1]["orderId"]]


async def test_user_trades_pages_by_from_id_order_and_time(sim: Sim) -> None:
    for n in range(4):
        r = await sim.order(side="BUY" if n % 2 == 0 else "SELL", type="MARKET", quantity="0.010")
        assert r.status_code == 200
        await _advance(sim, HOUR_MS)
    trades = (await sim.signed("GET", "/fapi/v1/userTrades", symbol="BTCUSDT")).json()
    ids, times = [t["id"] for t in trades], [t["time"] for t in trades]
    assert len(ids) == 4 and ids == sorted(ids)
    assert await _ids(sim, "/fapi/v1/userTrades", "id", limit=2) == ids[2:]
    assert await _ids(sim, "/fapi/v1/userTrades", "id", fromId=ids[1], limit=2) == ids[1:3]
    assert await _ids(sim, "/fapi/v1/userTrades", "id", startTime=times[1], limit=2) == ids[1:3]
    assert await _ids(sim, "/fapi/v1/userTrades", "id", orderId=trades[3]["orderId"]) == ids[3:]
    r = await sim.signed("GET", "/fapi/v1/userTrades", symbol="BTCUSDT", fromId=ids[0], startTime=times[0])
    assert r.json()["code"] == -1128
    r = await sim.signed("GET", "/fapi/v1/userTrades", symbol="BTCUSDT", startTime=0, endTime=7 * DAY_MS + 1)
    assert r.json()["code"] == -1127
    r = await sim.signed("GET", "/fapi/v1/userTrades", symbol="BTCUSDT", limit="x")
    assert r.json()["code"] == -1130


def test_ban_durations_escalate_from_two_minutes_to_three_days() -> None:
    now = [1_000_000.0]
    limiter = RateLimiter(
        RateLimitConfig(weight_per_minute=1, requests_after_429_before_ban=0, ban_seconds=120), lambda: now[0]
    )
    lengths = []
    for _ in range(9):
        limiter.charge_ip("1.2.3.4", 1)
        with pytest.raises(BinanceError) as first:
            limiter.charge_ip("1.2.3.4", 1)
        assert first.value.http_status == 429
        with pytest.raises(BinanceError) as banned:
            limiter.charge_ip("1.2.3.4", 1)
        assert banned.value.http_status == 418
        assert banned.value.retry_after_s is not None
        lengths.append(banned.value.retry_after_s)
        now[0] += banned.value.retry_after_s + 60  # wait the ban out, into a fresh minute
    assert lengths == [120, 480, 1920, 7680, 30720, 122880, MAX_BAN_SECONDS, MAX_BAN_SECONDS, MAX_BAN_SECONDS]
    assert limiter.bans("1.2.3.4") == 9
    limiter.reset()
    assert limiter.ban_seconds(limiter.bans("1.2.3.4") + 1) == 120


async def test_second_ban_over_http_is_longer(make_sim: Any) -> None:
    sim = await make_sim(rate_limits={"weight_per_minute": 1, "requests_after_429_before_ban": 0})
    state = sim.server.app[STATE_KEY]
    now = [2_000_000.0]
    state.limiter = RateLimiter(state.config.rate_limits, lambda: now[0])
    retry_afters = []
    for _ in range(2):
        statuses = [(await sim.http.get("/fapi/v1/ping")).status_code for _ in range(3)]
        assert statuses == [200, 429, 418]
        banned = await sim.http.get("/fapi/v1/ping")
        assert banned.status_code == 418 and "IP banned until" in banned.json()["msg"]
        retry_afters.append(int(banned.headers["Retry-After"]))
        now[0] += retry_afters[-1] + 60
    assert retry_afters == [120, 480]
