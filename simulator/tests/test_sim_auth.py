"""Authentication and time rules, over real HTTP."""

from __future__ import annotations

import time

import pytest

from sim_helpers import Sim, sign
from usdm_simulator.auth import sign as sim_sign
from usdm_simulator.auth import signature_payload


def test_binance_published_signature_vector() -> None:
    secret = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"
    payload = (
        "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC&recvWindow=5000"
        "&timestamp=1591702613943"
    )
    assert sim_sign(secret, payload) == "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"


def test_payload_is_query_plus_body_without_separator() -> None:
    assert signature_payload("a=1&b=2", "c=3&signature=ab") == "a=1&b=2c=3"


async def test_time(sim: Sim) -> None:
    r = await sim.http.get("/fapi/v1/time")
    assert r.status_code == 200
    assert abs(r.json()["serverTime"] - time.time() * 1000) < 2000


async def test_signed_ok_in_query_and_in_body(sim: Sim) -> None:
    r = await sim.signed("GET", "/fapi/v2/account")
    assert r.status_code == 200, r.text
    r = await sim.order(
        side="BUY", type="LIMIT", quantity="0.010", price="40000", timeInForce="GTC", in_body=True
    )
    assert r.status_code == 200, r.text


async def test_mixed_query_and_body_signature(sim: Sim) -> None:
    acct = sim.account
    query = "symbol=BTCUSDT&side=BUY&type=LIMIT"
    body = f"quantity=0.010&price=40000&timeInForce=GTC&timestamp={int(time.time() * 1000)}"
    sig = sign(acct.secret, query + body)
    r = await sim.http.post(
        f"/fapi/v1/order?{query}",
        content=f"{body}&signature={sig}",
        headers={"X-MBX-APIKEY": acct.key, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text
    # Signing with an '&' between the parts is wrong, as on Binance.
    bad = sign(acct.secret, query + "&" + body)
    r = await sim.http.post(
        f"/fapi/v1/order?{query}",
        content=f"{body}&signature={bad}",
        headers={"X-MBX-APIKEY": acct.key, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.json() == {"code": -1022, "msg": "Signature for this request is not valid."}


async def test_uppercase_signature_accepted(sim: Sim) -> None:
    acct = sim.account
    q = f"timestamp={int(time.time() * 1000)}"
    r = await sim.http.get(
        f"/fapi/v2/account?{q}&signature={sign(acct.secret, q).upper()}", headers={"X-MBX-APIKEY": acct.key}
    )
    assert r.status_code == 200


async def test_bad_signature_1022(sim: Sim) -> None:
    q = f"timestamp={int(time.time() * 1000)}"
    r = await sim.http.get(
        f"/fapi/v2/account?{q}&signature={'0' * 64}", headers={"X-MBX-APIKEY": sim.account.key}
    )
    assert r.status_code == 400
    assert r.json() == {"code": -1022, "msg": "Signature for this request is not valid."}


async def test_unknown_key_2015_http_401(sim: Sim) -> None:
    r = await sim.http.get("/fapi/v2/account?timestamp=1&signature=aa", headers={"X-MBX-APIKEY": "nosuchkey"})
    assert r.status_code == 401
    assert r.json() == {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}
    assert "X-MBX-USED-WEIGHT-1M" in r.headers


@pytest.mark.parametrize("headers", [{}, {"X-MBX-APIKEY": "bad key!"}])
async def test_missing_or_malformed_key_2014(sim: Sim, headers: dict[str, str]) -> None:
    r = await sim.http.get("/fapi/v2/account?timestamp=1&signature=aa", headers=headers)
    assert r.json() == {"code": -2014, "msg": "API-key format invalid."}


async def test_timestamp_outside_recv_window(sim: Sim) -> None:
    r = await sim.signed("GET", "/fapi/v2/account", timestamp=int(time.time() * 1000) - 6000)
    assert r.status_code == 400
    assert r.json() == {"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."}
    r = await sim.signed(
        "GET", "/fapi/v2/account", timestamp=int(time.time() * 1000) - 6000, recvWindow=10000
    )
    assert r.status_code == 200


async def test_timestamp_ahead(sim: Sim) -> None:
    r = await sim.signed("GET", "/fapi/v2/account", timestamp=int(time.time() * 1000) + 1500)
    assert r.json() == {
        "code": -1021,
        "msg": "Timestamp for this request was 1000ms ahead of the server's time.",
    }


async def test_missing_timestamp_and_bad_recv_window(sim: Sim) -> None:
    r = await sim.http.get("/fapi/v2/account?signature=aa", headers={"X-MBX-APIKEY": sim.account.key})
    assert r.json()["code"] == -1102
    r = await sim.signed("GET", "/fapi/v2/account", recvWindow=70000)
    assert r.json() == {"code": -1130, "msg": "Data sent for parameter 'recvWindow' is not valid."}


async def test_listen_key_needs_only_the_key(sim: Sim) -> None:
    r = await sim.keyed("POST", "/fapi/v1/listenKey")
    assert r.status_code == 200 and len(r.json()["listenKey"]) == 64
    r = await sim.http.post("/fapi/v1/listenKey")
    assert r.json()["code"] == -2014
