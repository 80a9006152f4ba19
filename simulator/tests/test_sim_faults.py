"""Every fault mode, over real HTTP and websocket."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from sim_helpers import LIMIT, Sim, next_event

ORDER = "POST /fapi/v1/order"
UNKNOWN_MSG = "Unknown error, please check your request or try again later."
TIMEOUT_MSG = (
    "Timeout waiting for response from backend server. Send status unknown; execution status unknown."
)


async def _orders(sim: Sim, cid: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await sim.admin_get("orders", clientOrderId=cid)
    return rows


async def test_latency(sim: Sim) -> None:
    """A latency fault with count 1 delays one request by at least its latency, then is gone.

    A delay only ever lengthens on a loaded machine, so the lower bound is safe; the second
    request is judged against the whole latency (1 s), not a tight bound: had the fault applied
    again it would take at least that, and a local request takes milliseconds.
    """
    await sim.arm(endpoint="GET /fapi/v1/time", kind="latency", latency_ms=1000, count=1)
    t0 = time.perf_counter()
    await sim.http.get("/fapi/v1/time")
    assert time.perf_counter() - t0 >= 1.0
    assert await sim.admin_get("faults") == []  # used up by that one request
    t0 = time.perf_counter()
    await sim.http.get("/fapi/v1/time")
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("http_500", 500),
        ("http_502", 502),
        ("http_503_unavailable", 503),
        ("throttled_1008", 503),
        ("waf_403", 403),
    ],
)
async def test_server_errors_do_not_execute(sim: Sim, kind: str, status: int) -> None:
    await sim.arm(endpoint=ORDER, kind=kind, count=1)
    r = await sim.order(**LIMIT, newClientOrderId="f-5xx")
    assert r.status_code == status
    if kind in ("http_502", "waf_403"):
        assert r.headers["content-type"].startswith("text/html")
    assert await _orders(sim, "f-5xx") == []
    rows = await sim.admin_get("requests", clientOrderId="f-5xx")
    assert rows[0]["fault"] == kind and rows[0]["status"] == status
    assert (await sim.order(**LIMIT, newClientOrderId="f-5xx")).status_code == 200


async def test_unknown_error_executed(sim: Sim) -> None:
    _, ws = await sim.user_stream()
    await sim.arm(endpoint=ORDER, kind="unknown_error_executed", count=1)
    r = await sim.order(**LIMIT, newClientOrderId="f-ue")
    assert r.status_code == 503 and r.json() == {"code": -1000, "msg": UNKNOWN_MSG}
    assert [o["status"] for o in await _orders(sim, "f-ue")] == ["NEW"]
    assert (await next_event(ws))["o"]["c"] == "f-ue"
    q = await sim.signed("GET", "/fapi/v1/order", symbol="BTCUSDT", origClientOrderId="f-ue")
    assert q.json()["status"] == "NEW"
    r = await sim.order(**LIMIT, newClientOrderId="f-ue")
    assert r.json()["code"] == -4116
    await ws.close()


async def test_unknown_error_not_executed(sim: Sim) -> None:
    await sim.arm(endpoint=ORDER, kind="unknown_error_not_executed", count=1)
    r = await sim.order(**LIMIT, newClientOrderId="f-un")
    assert r.status_code == 503 and r.json() == {"code": -1000, "msg": UNKNOWN_MSG}
    assert await _orders(sim, "f-un") == []
    q = await sim.signed("GET", "/fapi/v1/order", symbol="BTCUSDT", origClientOrderId="f-un")
    assert q.json()["code"] == -2013


@pytest.mark.parametrize("executed", [True, False])
async def test_timeout_1007(sim: Sim, executed: bool) -> None:
    await sim.arm(endpoint=ORDER, kind="timeout_1007", executed=executed, count=1)
    r = await sim.order(**LIMIT, newClientOrderId="f-to")
    assert r.status_code == 408 and r.json() == {"code": -1007, "msg": TIMEOUT_MSG}
    assert len(await _orders(sim, "f-to")) == (1 if executed else 0)


async def test_timeout_1007_status_override(sim: Sim) -> None:
    await sim.arm(endpoint=ORDER, kind="timeout_1007", http_status=503, count=1)
    assert (await sim.order(**LIMIT)).status_code == 503


async def test_drop_after_accept(sim: Sim) -> None:
    await sim.arm(endpoint=ORDER, kind="drop_after_accept", count=1)
    with pytest.raises(httpx.TransportError):
        await sim.order(**LIMIT, newClientOrderId="f-drop")
    assert [o["status"] for o in await _orders(sim, "f-drop")] == ["NEW"]
    rows = await sim.admin_get("requests", clientOrderId="f-drop")
    assert rows[0]["fault"] == "drop_after_accept"
    # The server keeps serving afterwards.
    assert (await sim.http.get("/fapi/v1/time")).status_code == 200


async def test_probability_faults_are_seeded(sim: Sim) -> None:
    await sim.arm(endpoint="GET /fapi/v1/time", kind="http_500", probability=0.5)
    statuses = [(await sim.http.get("/fapi/v1/time")).status_code for _ in range(40)]
    assert 5 < statuses.count(500) < 35
    assert (await sim.http.delete("/admin/faults")).status_code == 200
    assert [(await sim.http.get("/fapi/v1/time")).status_code for _ in range(5)] == [200] * 5


async def test_wildcard_endpoint_and_listing(sim: Sim) -> None:
    armed = await sim.arm(kind="http_500", count=2)
    assert armed["endpoint"] == "*" and armed["remaining"] == 2
    assert (await sim.http.get("/fapi/v1/time")).status_code == 500
    listing = await sim.admin_get("faults")
    assert listing[0]["remaining"] == 1 and listing[0]["fired"] == 1
    assert (await sim.http.get("/fapi/v1/exchangeInfo")).status_code == 500
    assert (await sim.http.get("/fapi/v1/time")).status_code == 200


async def test_clock_offset(sim: Sim) -> None:
    await sim.arm(kind="clock_offset_ms", offset_ms=-10_000)
    server = (await sim.http.get("/fapi/v1/time")).json()["serverTime"]
    assert abs(server - (time.time() * 1000 - 10_000)) < 1000
    r = await sim.signed("GET", "/fapi/v2/account")
    assert r.json() == {
        "code": -1021,
        "msg": "Timestamp for this request was 1000ms ahead of the server's time.",
    }
    r = await sim.signed("GET", "/fapi/v2/account", timestamp=server)
    assert r.status_code == 200
    await sim.http.delete("/admin/faults")
    assert (await sim.signed("GET", "/fapi/v2/account")).status_code == 200


async def test_user_stream_silent(sim: Sim) -> None:
    _, ws = await sim.user_stream()
    await sim.arm(kind="user_stream_silent", count=2)
    await sim.order(**LIMIT, newClientOrderId="silent-1")
    await sim.order(**LIMIT, newClientOrderId="silent-2")
    await sim.order(**LIMIT, newClientOrderId="heard")
    ev = await next_event(ws)
    assert ev["o"]["c"] == "heard"
    assert len(await sim.admin_get("orders")) == 3
    await ws.close()


async def test_user_stream_drop(sim: Sim) -> None:
    _, ws = await sim.user_stream()
    await sim.arm(kind="user_stream_drop", count=1)
    await sim.order(**LIMIT, newClientOrderId="dropped")
    msg = await ws.receive(timeout=3)
    assert msg.type.name in ("CLOSE", "CLOSED", "ERROR")
    assert ws.closed
    # A new connection on the same key works and gets later events.
    _, ws2 = await sim.user_stream()
    await sim.order(**LIMIT, newClientOrderId="after-drop")
    assert (await next_event(ws2))["o"]["c"] == "after-drop"
    await ws2.close()


async def test_faults_from_settings(make_sim: Any) -> None:
    sim = await make_sim(faults=[{"endpoint": "GET /fapi/v1/time", "kind": "http_502", "count": 1}])
    assert (await sim.http.get("/fapi/v1/time")).status_code == 502
    assert (await sim.http.get("/fapi/v1/time")).status_code == 200


async def test_latency_applies_concurrently(sim: Sim) -> None:
    """Delayed requests wait side by side: eight with 500 ms each take about 0.5 s, where one after
    another they would take at least 4 s. The bound sits between the two with seconds of margin
    either way, as the suite runs on a loaded machine."""
    await sim.arm(endpoint="GET /fapi/v1/time", kind="latency", latency_ms=500)
    t0 = time.perf_counter()
    answers = await asyncio.gather(*(sim.http.get("/fapi/v1/time") for _ in range(8)))
    took_s = time.perf_counter() - t0
    assert [a.status_code for a in answers] == [200] * 8
    assert 0.5 <= took_s < 2.5, f"8 requests with 500 ms latency took {took_s:.2f} s"


async def test_unknown_endpoint_is_refused(sim: Sim) -> None:
    r = await sim.http.post("/admin/faults", json={"endpoint": "POST /fapi/v1/orders", "kind": "http_500"})
    assert r.status_code == 400 and "unknown endpoint" in r.json()["error"]
    assert await sim.admin_get("faults") == []


async def test_throttled_1008_spares_reduce_only(sim: Sim) -> None:
    assert (await sim.order(side="BUY", type="MARKET", quantity="0.010")).status_code == 200
    await sim.arm(endpoint=ORDER, kind="throttled_1008")
    r = await sim.order(**LIMIT)
    assert r.status_code == 503 and r.json()["code"] == -1008
    r = await sim.order(side="SELL", type="MARKET", quantity="0.010", reduceOnly="true")
    assert r.status_code == 200, r.text
