"""Several accounts on one simulator: each has its own ORDERS limits and counters (REQUEST_WEIGHT and
bans stay per IP), its own user stream, and the admin API counts requests, 429s and orders per account."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from sim_helpers import LIMIT, Sim, away_from_window_edge, new_account, next_event
from usdm_simulator.cli import _banner, build_config, main, parse_account
from usdm_simulator.config import AccountConfig, SimulatorConfig, load_config


def priced(i: int) -> dict[str, Any]:
    """A resting BUY LIMIT, a different price each time (so none is a duplicate of another)."""
    return {**LIMIT, "price": str(49000 - i)}


async def count(sim: Sim, what: str, **filters: str) -> int:
    return len(await sim.admin_get(what, **filters))


async def test_one_account_over_its_orders_limit_leaves_the_other_unaffected(make_sim: Any) -> None:
    await away_from_window_edge()
    a, b = new_account(), new_account()
    sim = await make_sim(accounts=[a, b], rate_limits={"orders_per_10s": 3, "orders_per_minute": 100})
    for i in range(3):
        assert (await sim.order(account=a, **priced(i))).status_code == 200
    refused = await sim.order(account=a, **priced(3), newClientOrderId="a-over")
    assert refused.status_code == 429
    assert refused.json() == {
        "code": -1015,
        "msg": "Too many new orders; current limit is 3 orders per 10 SECOND.",
    }
    b_counts = []
    for i in range(3):
        placed = await sim.order(account=b, **priced(i))
        assert placed.status_code == 200, placed.text
        b_counts.append(placed.headers["X-MBX-ORDER-COUNT-10S"])
    assert b_counts == ["1", "2", "3"]  # B's own counter: A's four orders are not in it

    [a_429] = await sim.admin_get("requests", account=a.key, status="429")
    assert (a_429["errorCode"], a_429["clientOrderId"], a_429["path"]) == (-1015, "a-over", "/fapi/v1/order")
    assert await sim.admin_get("requests", account=b.key, status="429") == []
    assert await count(sim, "requests", account=a.key, errorCode="-1015") == 1
    assert (
        await count(sim, "requests", account=b.key, method="POST", path="/fapi/v1/order", status="200") == 3
    )
    assert await count(sim, "orders", account=a.key) == 3
    assert await count(sim, "orders", account=b.key) == 3
    state = await sim.admin_get("state")
    used = {acct["key"]: acct["orderLimits"]["used10s"] for acct in state["accounts"]}
    assert used == {a.key: 4, b.key: 3}


async def test_an_accounts_own_limits_override_the_global_ones(make_sim: Any) -> None:
    await away_from_window_edge()
    tight_10s = AccountConfig(key="tight10", secret="s1", orders_per_10s=1)
    default = AccountConfig(key="plain", secret="s2")
    tight_1m = AccountConfig(key="tight1m", secret="s3", orders_per_minute=2)
    sim = await make_sim(
        accounts=[tight_10s, default, tight_1m], rate_limits={"orders_per_10s": 4, "orders_per_minute": 100}
    )

    async def statuses(account: AccountConfig, n: int) -> list[int]:
        return [(await sim.order(account=account, **priced(i))).status_code for i in range(n)]

    assert await statuses(tight_10s, 2) == [200, 429]
    assert await statuses(default, 5) == [200, 200, 200, 200, 429]
    assert await statuses(tight_1m, 3) == [200, 200, 429]
    refused = await sim.admin_get("requests", status="429")
    assert [row["account"] for row in refused] == ["tight10", "plain", "tight1m"]
    last = (await sim.order(account=tight_1m, **priced(9))).json()
    assert last == {"code": -1015, "msg": "Too many new orders; current limit is 2 orders per 1 MINUTE."}

    def ten_s_and_minute(rules: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
        return [(r["interval"], r["intervalNum"], r["limit"]) for r in rules]

    own = await sim.signed("GET", "/fapi/v1/rateLimit/order", account=tight_10s)
    assert own.status_code == 200
    assert ten_s_and_minute(own.json()) == [("SECOND", 10, 1), ("MINUTE", 1, 100)]
    assert {r["rateLimitType"] for r in own.json()} == {"ORDERS"}
    plain = (await sim.signed("GET", "/fapi/v1/rateLimit/order", account=default)).json()
    assert ten_s_and_minute(plain) == [("SECOND", 10, 4), ("MINUTE", 1, 100)]
    # exchangeInfo is public: it lists the global limits whatever an account's own are.
    info = (await sim.http.get("/fapi/v1/exchangeInfo")).json()
    assert [x["limit"] for x in info["rateLimits"]][1:] == [100, 4]
    limits = {a["key"]: a["orderLimits"] for a in (await sim.admin_get("state"))["accounts"]}
    assert (limits["tight1m"]["per10s"], limits["tight1m"]["perMinute"]) == (4, 2)


async def test_a_ban_earned_by_one_account_stops_every_account_on_that_ip(make_sim: Any) -> None:
    """REQUEST_WEIGHT and bans are per IP, as on Binance: one account's requests past 429s ban the IP for
    every account behind it; the journal still says whose key each refused request carried."""
    a, b = new_account(), new_account()
    sim = await make_sim(
        accounts=[a, b], rate_limits={"weight_per_minute": 3, "requests_after_429_before_ban": 1}
    )
    statuses = [
        (await sim.signed("GET", "/fapi/v1/openOrders", account=a, symbol="BTCUSDT")).status_code
        for _ in range(6)
    ]
    assert statuses == [200, 200, 200, 429, 429, 418]
    banned = await sim.order(account=b, **priced(0))
    assert banned.status_code == 418 and banned.json()["msg"].startswith("Way too many requests; IP banned")
    # Refused for the IP before authentication, each is counted for the account whose key it carried.
    assert await count(sim, "requests", account=a.key, status="429") == 2
    assert await count(sim, "requests", account=a.key, status="418") == 1
    [b_418] = await sim.admin_get("requests", account=b.key, status="418")
    assert (b_418["errorCode"], b_418["path"]) == (-1003, "/fapi/v1/order")
    assert await count(sim, "orders", account=b.key) == 0


async def _order_cids(ws: Any, until: str) -> list[str]:
    """What ``ws`` delivers up to ``until``'s first order event: each ORDER_TRADE_UPDATE as its client order
    id, any other event as its type."""
    seen: list[str] = []
    while not seen or seen[-1] != until:
        event = await next_event(ws)
        seen.append(event["o"]["c"] if event["e"] == "ORDER_TRADE_UPDATE" else event["e"])
    return seen


async def test_each_user_stream_carries_only_its_own_accounts_events(sim: Sim) -> None:
    a, b = sim.accounts
    key_a, ws_a = await sim.user_stream(a)
    key_b, ws_b = await sim.user_stream(b)
    assert key_a != key_b
    again = await sim.keyed("POST", "/fapi/v1/listenKey", a)
    assert again.json() == {"listenKey": key_a}  # one listenKey per account

    # A trades (a fill: ORDER_TRADE_UPDATE and ACCOUNT_UPDATE), then B, then A again, then B.
    await sim.order(account=a, side="BUY", type="MARKET", quantity="0.010", newClientOrderId="a-1")
    await sim.order(account=b, **LIMIT, newClientOrderId="b-1")
    await sim.order(account=a, **priced(5), newClientOrderId="a-2")
    await sim.signed("DELETE", "/fapi/v1/order", account=a, symbol="BTCUSDT", origClientOrderId="a-2")
    await sim.order(account=b, **priced(6), newClientOrderId="b-2")

    assert await _order_cids(ws_b, until="b-2") == ["b-1", "b-2"]
    seen_a = await _order_cids(ws_a, until="a-2")
    assert {cid for cid in seen_a if cid.startswith(("a-", "b-"))} == {"a-1", "a-2"}
    assert "ACCOUNT_UPDATE" in seen_a
    # Nothing else is queued for B: a late leak of A's cancel would show here.
    with pytest.raises(asyncio.TimeoutError):
        await ws_b.receive_json(timeout=0.3)
    await ws_a.close()
    await ws_b.close()


def test_account_flag_takes_its_own_limits() -> None:
    config, generated = build_config(
        [
            "--orders-per-10s",
            "50",
            "--account",
            "k1:s1:orders_per_10s=5:orders_per_minute=60",
            "--account",
            "k2:s2",
            "--account",
            "k3:with:colon:orders_per_minute=7",
        ]
    )
    assert not generated
    got = [(a.key, a.secret, a.orders_per_10s, a.orders_per_minute) for a in config.accounts]
    assert got == [("k1", "s1", 5, 60), ("k2", "s2", None, None), ("k3", "with:colon", None, 7)]
    assert config.rate_limits.orders_per_10s == 50
    banner = _banner(config, 8090, generated)
    assert "key=k1  secret=s1  (5 orders/10s, 60 orders/min)" in banner
    assert "key=k2  secret=s2\n" in banner


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("k1", "--account expects KEY:SECRET"),
        ("k1:", "--account expects KEY:SECRET"),
        (":s1", "--account expects KEY:SECRET"),
        ("k1:s1:orders_per_hour=5", "unknown option 'orders_per_hour'"),
        ("k1:s1:orders_per_10s=0", "orders_per_10s must be a whole number of at least 1, got '0'"),
        ("k1:s1:orders_per_minute=x", "orders_per_minute must be a whole number of at least 1, got 'x'"),
    ],
)
def test_bad_account_flags_are_refused_naming_the_rule(item: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_account(item)


def test_main_refuses_a_bad_account_without_echoing_its_secret(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--account", "key:very-secret:orders_per_10s=-1"]) == 2
    err = capsys.readouterr().err
    assert "orders_per_10s must be a whole number" in err and "very-secret" not in err


def test_account_limits_from_yaml_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "sim.yaml"
    path.write_text("accounts:\n  - {key: y1, secret: s, orders_per_10s: 7}\n  - {key: y2, secret: s}\n")
    from_yaml = load_config(path)
    assert [(a.key, a.orders_per_10s) for a in from_yaml.accounts] == [("y1", 7), ("y2", None)]
    monkeypatch.setenv("SIM_ACCOUNTS", json.dumps([{"key": "e1", "secret": "s", "orders_per_minute": 9}]))
    assert [(a.key, a.orders_per_minute) for a in SimulatorConfig().accounts] == [("e1", 9)]


def test_two_accounts_may_not_share_a_key() -> None:
    with pytest.raises(ValidationError, match=r"accounts\[1\].key: the same API key as accounts\[0\]"):
        SimulatorConfig(accounts=[AccountConfig(key="k", secret="a"), AccountConfig(key="k", secret="b")])
    with pytest.raises(ValidationError, match="orders_per_10s"):
        AccountConfig(key="k", secret="s", orders_per_10s=0)


async def test_admin_filters_per_account_and_refuses_a_bad_number(sim: Sim) -> None:
    a, b = sim.accounts
    stop: dict[str, Any] = {
        "algoType": "CONDITIONAL",
        "symbol": "BTCUSDT",
        "type": "STOP_MARKET",
        "side": "SELL",
    }
    for account, cid in ((a, "algo-a"), (b, "algo-b")):
        algo = {**stop, "quantity": "0.010", "triggerPrice": "40000", "clientAlgoId": cid}
        placed = await sim.signed("POST", "/fapi/v1/algoOrder", account=account, **algo)
        assert placed.status_code == 200, placed.text
    assert [o["clientAlgoId"] for o in await sim.admin_get("algo-orders", account=b.key)] == ["algo-b"]
    assert len(await sim.admin_get("algo-orders")) == 2
    bad = await sim.http.get("/admin/requests", params={"status": "four-two-nine"})
    assert bad.status_code == 400 and bad.json() == {
        "error": "status must be an integer, got 'four-two-nine'"
    }
    bad = await sim.http.get("/admin/requests", params={"errorCode": "x"})
    assert bad.status_code == 400 and "errorCode must be an integer" in bad.json()["error"]
