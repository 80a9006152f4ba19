"""Replay: a recorded CSV of trades or klines drives a symbol's reference price, in order and on time;
bad files fail at start naming the file and line."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from sim_helpers import new_account, next_event
from usdm_simulator.cli import build_config, main
from usdm_simulator.config import SimulatorConfig
from usdm_simulator.replay import ReplayFileError, iter_points

T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z


def _write(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_trades_and_klines_files_are_read_in_order(tmp_path: Path) -> None:
    trades = _write(
        tmp_path,
        "trades.csv",
        [
            "id,price,qty,quote_qty,time,is_buyer_maker",
            f"1,100.5,1,100.5,{T0},true",
            f"2,101,2,202,{T0 + 5},false",
        ],
    )
    assert [(p.time_ms, p.price) for p in iter_points(trades)] == [
        (T0, Decimal("100.5")),
        (T0 + 5, Decimal(101)),
    ]
    micros = _write(tmp_path, "agg.csv", [f"7,99,1,1,1,{T0 * 1000 + 2000},false"])  # aggTrades, no header, µs
    assert [(p.time_ms, p.price) for p in iter_points(micros)] == [(T0 + 2, Decimal(99))]
    klines = _write(
        tmp_path,
        "klines.csv",
        [f"{T0},100,110,90,105,5", f"{T0 + 60_000},105,106,95,96,5"],  # a rising bar, then a falling one
    )
    points = [(p.time_ms - T0, int(p.price)) for p in iter_points(klines)]
    assert points == [
        (0, 100), (15_000, 90), (30_000, 110), (45_000, 105),
        (60_000, 105), (75_000, 106), (90_000, 95), (105_000, 96),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("lines", "line", "reason"),
    [
        ([f"1,100,1,100,{T0},true", f"2,abc,1,100,{T0},true"], 2, "price 'abc' is not a number"),
        ([f"1,100,1,100,{T0},true", f"2,100,1,100,{T0 - 1},true"], 2, "goes backwards"),
        (["id,price,qty,quote_qty,time,is_buyer_maker", f"1,100,1,100,{T0},true", "2,100"], 3, "columns"),
        ([f"{T0},100,99,90,95,1"], 1, "high/low"),
        (["a,b,c"], 1, "unrecognised header"),
    ],
)
def test_malformed_file_names_file_and_line(tmp_path: Path, lines: list[str], line: int, reason: str) -> None:
    path = _write(tmp_path, "bad.csv", lines)
    with pytest.raises(ReplayFileError, match=f"{path}:{line}: .*{reason}"):
        list(iter_points(path))


def test_malformed_replay_fails_at_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "bad.csv", [f"1,100,1,100,{T0},true", f"2,-5,1,100,{T0},true"])
    with pytest.raises(ValidationError, match=f"{path}:2: price '-5'"):
        SimulatorConfig(accounts=[new_account()], replay={"BTCUSDT": path})
    assert main(["--port", "0", "--replay", f"BTCUSDT={path}"]) == 2
    assert f"{path}:2:" in capsys.readouterr().err
    with pytest.raises(ValidationError, match="no data rows"):
        SimulatorConfig(accounts=[new_account()], replay={"btcusdt": _write(tmp_path, "e.csv", ["a,b"][:0])})
    with pytest.raises(ValidationError, match="not served: DOGEUSDT"):
        SimulatorConfig(accounts=[new_account()], symbols=["BTCUSDT"], replay={"DOGEUSDT": path})


def test_cli_replay_options(tmp_path: Path) -> None:
    path = _write(tmp_path, "t.csv", [f"1,100,1,100,{T0},true"])
    config, _ = build_config(["--replay", f"ethusdt={path}", "--replay-speed", "10"])
    assert config.replay == {"ETHUSDT": path} and config.replay_speed == 10


async def test_trades_replay_into_ticker_and_agg_trade_stream(tmp_path: Path, make_sim: Any) -> None:
    prices = ["50000.0", "50010.5", "50020.0", "50015.5", "50030.0"]
    rows = [f"{i},{p},0.01,1,{T0 + 600 + 300 * i},false" for i, p in enumerate(prices)]
    rows.insert(1, f"9,50010.5,0.02,1,{T0 + 700},true")  # the same price again: no new print
    path = _write(tmp_path, "trades.csv", [f"0,49990.0,0.01,1,{T0},false", *rows])
    sim = await make_sim(replay={"BTCUSDT": path}, replay_speed=1)
    ws = await sim.session.ws_connect(f"{sim.ws_base}/ws/btcusdt@aggTrade")
    r = await sim.http.get("/fapi/v1/ticker/price", params={"symbol": "BTCUSDT"})
    assert r.json()["price"] == "49990.00"  # the first row applies at start
    seen = [(await next_event(ws))["p"] for _ in prices]
    assert seen == [f"{Decimal(p):.2f}" for p in prices]
    r = await sim.http.get("/fapi/v1/ticker/price", params={"symbol": "BTCUSDT"})
    assert r.json()["price"] == "50030.00"
    eth = await sim.http.get("/fapi/v1/ticker/price", params={"symbol": "ETHUSDT"})
    assert Decimal(eth.json()["price"]) == 3000  # other symbols are not replayed
    await asyncio.sleep(0.3)
    r = await sim.http.get("/fapi/v1/ticker/price", params={"symbol": "BTCUSDT"})
    assert r.json()["price"] == "50030.00"  # the series ended; the frozen walk keeps the last price
    await ws.close()


async def test_klines_replay_faster_than_real_time(tmp_path: Path, make_sim: Any) -> None:
    path = _write(
        tmp_path,
        "klines.csv",
        [
            "open_time,open,high,low,close,volume,close_time",
            f"{T0},3000,3010,2990,2995,1,{T0 + 59_999}",
            f"{T0 + 60_000},2995,3020,2995,3020,1,{T0 + 119_999}",
        ],
    )
    sim = await make_sim(replay={"ETHUSDT": path}, replay_speed=40, symbols=["BTCUSDT", "ETHUSDT"])
    ws = await sim.session.ws_connect(f"{sim.ws_base}/ws/ethusdt@aggTrade")
    seen = [(await next_event(ws))["p"] for _ in range(4)]  # bar 1 after its open; bar 2 (2995 repeats)
    assert seen == ["3010.00", "2990.00", "2995.00", "3020.00"]
    await ws.close()


async def test_walk_skips_replayed_symbol_then_resumes_from_last_price(tmp_path: Path, make_sim: Any) -> None:
    """While BTCUSDT replays, the walk moves only the other symbols; after the series ends the walk
    takes BTCUSDT on from the replay's last price (51200), not from its first (51000) or the default.

    Behaviour, not timing: the walk runs ~60 steps during the replay's 600 ms, and any step on BTCUSDT
    would print a price of its own before 51200. A 1 bps step (sd ~5 on 51200) keeps the first
    walked price within 100 of 51200 at 20 standard deviations, while 51000 is 200 away.
    """
    path = _write(tmp_path, "t.csv", [f"1,51000,1,1,{T0},true", f"2,51200,1,1,{T0 + 600},true"])
    sim = await make_sim(replay={"BTCUSDT": path}, walk_interval_ms=10, walk_step_bps=Decimal(1))
    assert await _prices_reach(sim, lambda p: Decimal(p["ETHUSDT"]["price"]) != 3000)  # the walk runs
    trades = await _btc_trades_once(sim, lambda ts: len(ts) > 3)
    assert [t["p"] for t in trades[:2]] == ["51000.00", "51200.00"]  # nothing walked BTCUSDT in between
    assert abs(Decimal(trades[2]["p"]) - 51200) < 100  # the walk's first step starts from 51200


async def _btc_trades_once(sim: Any, done: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
    """BTCUSDT's aggTrades as soon as ``done`` holds for them (polled; fails after a generous 30 s, the
    limit only for a stuck simulator on a loaded machine)."""
    for _ in range(1500):
        trades: list[dict[str, Any]] = (
            await sim.http.get("/fapi/v1/aggTrades", params={"symbol": "BTCUSDT"})
        ).json()
        if done(trades):
            return trades
        await asyncio.sleep(0.02)
    raise AssertionError(f"BTCUSDT trades never reached the expected state: {trades}")


async def _prices_reach(sim: Any, done: Callable[[dict[str, Any]], bool]) -> bool:
    """Poll the admin prices until ``done`` holds for them (for up to a generous 30 s)."""
    for _ in range(1500):
        if done(await sim.admin_get("prices")):
            return True
        await asyncio.sleep(0.02)
    return False
