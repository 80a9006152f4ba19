"""Contract specifications and the ``GET /fapi/v1/exchangeInfo`` document, in Binance's exact shapes.

The contracts live in ``usdm_simulator/data/usdm_perpetuals.json``, the one place to add a contract: copy the
symbol's pricePrecision, quantityPrecision and filters (keyed by ``filterType``, Binance's field names)
from the live exchangeInfo and give it an ``initialPrice``. The file is read once, at import; an entry
that is malformed or inconsistent (initial price off the tick grid or out of bounds, no valid minimum
MARKET order at that price) raises ValueError naming the symbol.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any

DATA_FILE = "data/usdm_perpetuals.json"  # inside the simulator package
ORDER_TYPES = [
    "LIMIT",
    "MARKET",
    "STOP",
    "STOP_MARKET",
    "TAKE_PROFIT",
    "TAKE_PROFIT_MARKET",
    "TRAILING_STOP_MARKET",
]
TIME_IN_FORCE = ["GTC", "IOC", "FOK", "GTX", "GTD"]


@dataclass(frozen=True)
class SymbolSpec:
    """Trading rules of one perpetual contract (values from the live exchange, see ``DATA_FILE``)."""

    symbol: str
    base_asset: str
    price_precision: int
    quantity_precision: int
    min_price: Decimal
    max_price: Decimal
    tick_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    step_size: Decimal
    market_min_qty: Decimal
    market_max_qty: Decimal
    market_step_size: Decimal
    min_notional: Decimal
    multiplier_up: Decimal
    multiplier_down: Decimal
    initial_price: Decimal
    multiplier_decimal: int = 4


_INT_FIELDS = frozenset(f.name for f in fields(SymbolSpec) if f.type == "int")


def _spec_from_entry(entry: dict[str, Any]) -> SymbolSpec:
    """Map one ``symbols[]`` entry of the data file to a SymbolSpec; KeyError names a missing field."""
    f = entry["filters"]
    price, lot, market = f["PRICE_FILTER"], f["LOT_SIZE"], f["MARKET_LOT_SIZE"]
    percent = f["PERCENT_PRICE"]
    return SymbolSpec(
        symbol=entry["symbol"],
        base_asset=entry["baseAsset"],
        price_precision=int(entry["pricePrecision"]),
        quantity_precision=int(entry["quantityPrecision"]),
        min_price=Decimal(price["minPrice"]),
        max_price=Decimal(price["maxPrice"]),
        tick_size=Decimal(price["tickSize"]),
        min_qty=Decimal(lot["minQty"]),
        max_qty=Decimal(lot["maxQty"]),
        step_size=Decimal(lot["stepSize"]),
        market_min_qty=Decimal(market["minQty"]),
        market_max_qty=Decimal(market["maxQty"]),
        market_step_size=Decimal(market["stepSize"]),
        min_notional=Decimal(f["MIN_NOTIONAL"]["notional"]),
        multiplier_up=Decimal(percent["multiplierUp"]),
        multiplier_down=Decimal(percent["multiplierDown"]),
        multiplier_decimal=int(percent["multiplierDecimal"]),
        initial_price=Decimal(entry["initialPrice"]),
    )


def _min_market_qty(spec: SymbolSpec, price: Decimal) -> Decimal:
    """Return the smallest MARKET quantity on the step grid that meets MIN_NOTIONAL at ``price``."""
    steps = math.ceil((spec.min_notional / price - spec.market_min_qty) / spec.market_step_size)
    return spec.market_min_qty + max(0, steps) * spec.market_step_size


def _check(spec: SymbolSpec) -> None:
    """Raise ValueError unless the initial price is a valid price and a minimum MARKET order fits."""
    price = spec.initial_price
    if not spec.min_price <= price <= spec.max_price or (price - spec.min_price) % spec.tick_size != 0:
        raise ValueError(f"initialPrice {price} is outside PRICE_FILTER or off its tick grid")
    if _min_market_qty(spec, price) > spec.market_max_qty:
        raise ValueError(f"no MARKET quantity reaches MIN_NOTIONAL {spec.min_notional} at {price}")


def load_specs(text: str) -> dict[str, SymbolSpec]:
    """Parse the data file's JSON ``text`` into specs by symbol, in file order.

    Raises ValueError naming the entry for a missing or malformed field, an inconsistent contract or a
    duplicate symbol.
    """
    out: dict[str, SymbolSpec] = {}
    for entry in json.loads(text)["symbols"]:
        name = entry.get("symbol")
        try:
            spec = _spec_from_entry(entry)
            _check(spec)
        except KeyError as exc:
            raise ValueError(f"usdm_simulator/{DATA_FILE}: {name}: missing field {exc}") from exc
        except (TypeError, InvalidOperation, ValueError) as exc:
            raise ValueError(f"usdm_simulator/{DATA_FILE}: {name}: {exc}") from exc
        if name in out:
            raise ValueError(f"usdm_simulator/{DATA_FILE}: {name}: listed twice")
        out[name] = spec
    return out


KNOWN_SYMBOLS: dict[str, SymbolSpec] = load_specs(
    resources.files("usdm_simulator").joinpath(DATA_FILE).read_text(encoding="utf-8")
)


def check_known(symbols: list[str]) -> None:
    """Raise ValueError naming the first symbol not in ``KNOWN_SYMBOLS`` and listing the known ones."""
    for name in symbols:
        if name not in KNOWN_SYMBOLS:
            raise ValueError(f"unknown symbol {name!r}; known: {', '.join(sorted(KNOWN_SYMBOLS))}")


def build_specs(
    symbols: list[str], prices: dict[str, Decimal], overrides: dict[str, dict[str, str]] | None = None
) -> dict[str, SymbolSpec]:
    """Return the specs for ``symbols``, initial prices taken from ``prices`` and fields from ``overrides``.

    ``overrides`` maps a symbol to SymbolSpec field names and values (decimal strings; integers for the
    precisions and ``multiplier_decimal``). Raises ValueError for an unknown symbol or field.
    """
    check_known(symbols)
    out: dict[str, SymbolSpec] = {}
    for name in symbols:
        values: dict[str, object] = dict(KNOWN_SYMBOLS[name].__dict__)
        if name in prices:
            values["initial_price"] = Decimal(prices[name])
        for key, value in (overrides or {}).get(name, {}).items():
            if key not in values or key in ("symbol", "base_asset"):
                raise ValueError(f"symbol_overrides.{name}: unknown field {key!r}")
            values[key] = int(value) if key in _INT_FIELDS else Decimal(str(value))
        out[name] = SymbolSpec(**values)  # type: ignore[arg-type]
    return out


def _plain(value: Decimal) -> str:
    return format(value, "f")


def symbol_document(spec: SymbolSpec, max_num_orders: int) -> dict[str, Any]:
    """Return one ``symbols[]`` entry of exchangeInfo for ``spec``."""
    return {
        "symbol": spec.symbol,
        "pair": spec.symbol,
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000,
        "status": "TRADING",
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": spec.base_asset,
        "quoteAsset": "USDT",
        "marginAsset": "USDT",
        "pricePrecision": spec.price_precision,
        "quantityPrecision": spec.quantity_precision,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": [],
        "settlePlan": 0,
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "maxMoveOrderLimit": 10000,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": _plain(spec.min_price),
                "maxPrice": _plain(spec.max_price),
                "tickSize": _plain(spec.tick_size),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": _plain(spec.min_qty),
                "maxQty": _plain(spec.max_qty),
                "stepSize": _plain(spec.step_size),
            },
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": _plain(spec.market_min_qty),
                "maxQty": _plain(spec.market_max_qty),
                "stepSize": _plain(spec.market_step_size),
            },
            {"filterType": "MAX_NUM_ORDERS", "limit": max_num_orders},
            {"filterType": "MIN_NOTIONAL", "notional": _plain(spec.min_notional)},
            {
                "filterType": "PERCENT_PRICE",
                "multiplierUp": _plain(spec.multiplier_up),
                "multiplierDown": _plain(spec.multiplier_down),
                "multiplierDecimal": str(spec.multiplier_decimal),
            },
        ],
        "orderTypes": list(ORDER_TYPES),
        "timeInForce": list(TIME_IN_FORCE),
    }


def exchange_info(
    specs: dict[str, SymbolSpec], rate_limits: list[dict[str, Any]], max_num_orders: int, server_time_ms: int
) -> dict[str, Any]:
    """Return the full exchangeInfo document (timezone, ``rate_limits`` as given, assets, symbols)."""
    return {
        "timezone": "UTC",
        "serverTime": server_time_ms,
        "futuresType": "U_MARGINED",
        "rateLimits": rate_limits,
        "exchangeFilters": [],
        "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
        "symbols": [symbol_document(s, max_num_orders) for s in specs.values()],
    }
