"""Admin API and the ``python -m usdm_simulator`` process."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from sim_helpers import Sim
from usdm_simulator.cli import build_config

ROOT = Path(__file__).resolve().parents[1]


async def test_requests_journal_and_filters(sim: Sim) -> None:
    await sim.order(
        side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.010", price="49000", newClientOrderId="j-1"
    )
    await sim.order(
        side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.010", price="49000", newClientOrderId="j-1"
    )
    await sim.http.get("/fapi/v1/time")
    rows = await sim.admin_get("requests", path="/fapi/v1/order", method="POST", clientOrderId="j-1")
    assert [r["status"] for r in rows] == [200, 400]
    assert rows[1]["errorCode"] == -4116 and rows[0]["account"] == sim.account.key
    assert "signature" not in rows[0]["params"] and rows[0]["params"]["newClientOrderId"] == "j-1"
    assert len(await sim.admin_get("requests", path="/fapi/v1/time")) == 1


async def test_admin_orders_filters_and_reset(sim: Sim) -> None:
    await sim.order(side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.010", price="49000")
    await sim.order(account=sim.accounts[1], side="BUY", type="MARKET", quantity="0.010")
    assert len(await sim.admin_get("orders")) == 2
    mine = await sim.admin_get("orders", account=sim.account.key)
    assert len(mine) == 1 and mine[0]["status"] == "NEW" and mine[0]["executedQty"] == "0.000"
    assert len(await sim.admin_get("orders", symbol="ETHUSDT")) == 0
    await sim.arm(kind="latency", latency_ms=1)
    r = await sim.http.post("/admin/reset")
    assert r.json() == {"reset": True}
    assert await sim.admin_get("orders") == [] and await sim.admin_get("requests") == []
    assert await sim.admin_get("faults") == []


async def test_admin_price_validation(sim: Sim) -> None:
    r = await sim.http.post("/admin/price", json={"symbol": "NOPE", "price": "1"})
    assert r.status_code == 400
    r = await sim.http.post("/admin/price", json={"symbol": "BTCUSDT", "price": "-1"})
    assert r.status_code == 400
    r = await sim.http.post("/admin/faults", json={"kind": "nonsense"})
    assert r.status_code == 400 and "kind" in r.json()["error"]
    prices = await sim.set_price("BTCUSDT", "51000.5")
    assert prices["BTCUSDT"]["price"] == "51000.5"


def test_cli_generates_account_when_none_given() -> None:
    config, generated = build_config(["--port", "0", "--symbols", "BTCUSDT,ETHUSDT", "--seed", "7"])
    assert generated and len(config.accounts) == 1 and len(config.accounts[0].key) == 64
    assert config.symbols == ["BTCUSDT", "ETHUSDT"] and config.seed == 7
    config, generated = build_config(
        ["--account", "k:s", "--account", "k2:s2", "--walk-interval-ms", "0", "--price", "BTCUSDT=60000"]
    )
    assert not generated and [a.key for a in config.accounts] == ["k", "k2"]
    assert config.walk_interval_ms == 0 and str(config.reference_prices["BTCUSDT"]) == "60000"


def test_cli_yaml_config(tmp_path: Path) -> None:
    path = tmp_path / "sim.yaml"
    path.write_text(
        "port: 9123\nrate_limits:\n  weight_per_minute: 7\naccounts:\n  - key: a\n    secret: b\n"
    )
    config, generated = build_config(["--config", str(path)])
    assert config.port == 9123 and config.rate_limits.weight_per_minute == 7 and not generated
    path.write_text("prot: 1\n")
    from usdm_simulator.cli import main

    assert main(["--config", str(path)]) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.integration  # starts the simulator as a separate process
@pytest.mark.timeout(30)
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_python_m_simulator_signed_round_trip(stop_signal: signal.Signals) -> None:
    key, secret = secrets.token_hex(32), secrets.token_hex(32)
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "usdm_simulator",
            "--port",
            str(port),
            "--account",
            f"{key}:{secret}",
            "--walk-interval-ms",
            "0",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        banner = [proc.stdout.readline() for _ in range(6)]
        text = "".join(banner)
        assert f"http://127.0.0.1:{port}" in text and f"key={key}" in text and "/private/ws" in text
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            q = (
                f"symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.010&price=49000"
                f"&timestamp={int(time.time() * 1000)}"
            )
            sig = hmac.new(secret.encode(), q.encode(), hashlib.sha256).hexdigest()
            r = client.post(f"/fapi/v1/order?{q}&signature={sig}", headers={"X-MBX-APIKEY": key})
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "NEW"
    finally:
        os.kill(proc.pid, stop_signal)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == 0
