"""Contracts from usdm_simulator/data/usdm_perpetuals.json: exchangeInfo, minimum orders, subsets, errors."""

from __future__ import annotations

import copy
import fnmatch
import json
import math
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from sim_helpers import Sim
from usdm_simulator.cli import build_config, main
from usdm_simulator.config import SimulatorConfig
from usdm_simulator.symbols import DATA_FILE, KNOWN_SYMBOLS, load_specs

ROOT = Path(__file__).resolve().parents[1]
DATA_PATH = ROOT / "usdm_simulator" / DATA_FILE
TWENTY = [
    "BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT", "AVAXUSDT", "LINKUSDT",
    "DOTUSDT", "LTCUSDT", "BCHUSDT", "TRXUSDT", "NEARUSDT", "APTUSDT", "ARBUSDT", "OPUSDT", "FILUSDT",
    "ATOMUSDT", "ETCUSDT",
]  # fmt: skip
FILTER_KEYS = {
    "PRICE_FILTER": {"filterType", "minPrice", "maxPrice", "tickSize"},
    "LOT_SIZE": {"filterType", "minQty", "maxQty", "stepSize"},
    "MARKET_LOT_SIZE": {"filterType", "minQty", "maxQty", "stepSize"},
    "MAX_NUM_ORDERS": {"filterType", "limit"},
    "MIN_NOTIONAL": {"filterType", "notional"},
    "PERCENT_PRICE": {"filterType", "multiplierUp", "multiplierDown", "multiplierDecimal"},
}


def _data() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DATA_PATH.read_text())
    return data


def _filters(symbol: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["filterType"]: f for f in symbol["filters"]}


def _min_market_qty(filters: dict[str, dict[str, Any]], price: Decimal) -> Decimal:
    """minQty of MARKET_LOT_SIZE, raised by whole steps until it meets MIN_NOTIONAL at ``price``."""
    lot = filters["MARKET_LOT_SIZE"]
    low, step = Decimal(lot["minQty"]), Decimal(lot["stepSize"])
    notional = Decimal(filters["MIN_NOTIONAL"]["notional"])
    steps = max(0, math.ceil((notional / price - low) / step))
    return (low + steps * step).quantize(step)


def test_data_file_has_source_note_and_the_twenty_contracts() -> None:
    data = _data()
    assert "exchangeInfo" in data["source"] and data["as_of"]
    assert [s["symbol"] for s in data["symbols"]] == TWENTY
    assert list(KNOWN_SYMBOLS) == TWENTY


def test_data_file_ships_with_the_package() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["usdm_simulator"]
    assert any(fnmatch.fnmatch(DATA_FILE, p) for p in patterns)


async def test_exchange_info_lists_every_contract_with_its_filters(sim: Sim) -> None:
    info = (await sim.http.get("/fapi/v1/exchangeInfo")).json()
    listed = {s["symbol"]: s for s in info["symbols"]}
    assert list(listed) == TWENTY
    for entry in _data()["symbols"]:
        doc = listed[entry["symbol"]]
        assert (doc["baseAsset"], doc["quoteAsset"], doc["marginAsset"]) == (
            entry["baseAsset"],
            "USDT",
            "USDT",
        )
        assert (doc["contractType"], doc["status"]) == ("PERPETUAL", "TRADING")
        assert doc["pricePrecision"] == entry["pricePrecision"]
        assert doc["quantityPrecision"] == entry["quantityPrecision"]
        filters = _filters(doc)
        assert list(filters) == list(FILTER_KEYS)
        for kind, keys in FILTER_KEYS.items():
            assert set(filters[kind]) == keys, (entry["symbol"], kind)
        for kind, values in entry["filters"].items():
            assert filters[kind] == {"filterType": kind, **values}, (entry["symbol"], kind)
    doge, op = _filters(listed["DOGEUSDT"]), _filters(listed["OPUSDT"])
    assert doge["PRICE_FILTER"]["tickSize"] == "0.000010" and doge["MIN_NOTIONAL"]["notional"] == "5"
    assert op["PRICE_FILTER"]["minPrice"] == "0.0001000" and op["LOT_SIZE"]["stepSize"] == "0.1"
    assert _filters(listed["ARBUSDT"])["PERCENT_PRICE"]["multiplierUp"] == "1.1500"
    assert _filters(listed["LINKUSDT"])["MIN_NOTIONAL"]["notional"] == "20"


async def test_minimum_market_order_accepted_for_every_contract(sim: Sim) -> None:
    info = (await sim.http.get("/fapi/v1/exchangeInfo")).json()
    prices = {p["symbol"]: Decimal(p["price"]) for p in (await sim.http.get("/fapi/v1/ticker/price")).json()}
    for doc in info["symbols"]:
        symbol, filters = doc["symbol"], _filters(doc)
        qty = _min_market_qty(filters, prices[symbol])
        r = await sim.order(symbol=symbol, side="BUY", type="MARKET", quantity=format(qty, "f"))
        assert r.status_code == 200, (symbol, qty, r.text)
        smaller = qty - Decimal(filters["MARKET_LOT_SIZE"]["stepSize"])
        if smaller >= Decimal(filters["MARKET_LOT_SIZE"]["minQty"]):
            r = await sim.order(symbol=symbol, side="BUY", type="MARKET", quantity=format(smaller, "f"))
            assert r.json()["code"] == -4164, (symbol, smaller, r.text)
    filled = await sim.admin_get("orders", status="FILLED")
    assert sorted(o["symbol"] for o in filled) == sorted(TWENTY)


async def test_subset_lists_only_those_symbols(make_sim: Any) -> None:
    config, _ = build_config(["--symbols", "dogeusdt,OPUSDT"])
    assert config.symbols == ["DOGEUSDT", "OPUSDT"]
    sim = await make_sim(symbols=config.symbols)
    info = (await sim.http.get("/fapi/v1/exchangeInfo")).json()
    assert [s["symbol"] for s in info["symbols"]] == ["DOGEUSDT", "OPUSDT"]
    tickers = (await sim.http.get("/fapi/v1/ticker/price")).json()
    assert [t["symbol"] for t in tickers] == ["DOGEUSDT", "OPUSDT"]
    r = await sim.order(side="BUY", type="MARKET", quantity="0.002")
    assert r.json()["code"] == -1121


def test_default_symbols_are_every_contract() -> None:
    assert SimulatorConfig().symbols == TWENTY
    assert build_config([])[0].symbols == TWENTY


def test_unknown_symbol_error_lists_the_known(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValidationError, match=r"unknown symbol 'NOPEUSDT'; known: ADAUSDT, APTUSDT"):
        build_config(["--symbols", "BTCUSDT,NOPEUSDT"])
    assert main(["--symbols", "NOPEUSDT"]) == 2
    err = capsys.readouterr().err
    assert "unknown symbol 'NOPEUSDT'" in err and all(s in err for s in TWENTY)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: e.update(initialPrice="0.1500001"), "DOGEUSDT: initialPrice 0.1500001 is outside"),
        (lambda e: e["filters"].pop("LOT_SIZE"), "DOGEUSDT: missing field 'LOT_SIZE'"),
        (lambda e: e["filters"]["MIN_NOTIONAL"].update(notional="1e12"), "DOGEUSDT: no MARKET quantity"),
        (lambda e: e.update(symbol="BTCUSDT"), "BTCUSDT: listed twice"),
    ],
)
def test_bad_data_file_entry_is_named(mutate: Any, message: str) -> None:
    data = copy.deepcopy(_data())
    mutate(data["symbols"][5])
    with pytest.raises(ValueError, match=message):
        load_specs(json.dumps(data))
