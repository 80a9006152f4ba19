"""Contract specifications and the ``GET /fapi/v1/exchangeInfo`` document, in Binance's exact shapes."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from simulator.config import RateLimitConfig

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
    """Trading rules of one perpetual contract (values modelled on the live exchange)."""

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


def _spec(
    symbol: str,
    pp: int,
    qp: int,
    price: tuple[str, str, str],
    lot: tuple[str, str, str],
    market_lot: tuple[str, str, str],
    notional: str,
    initial: str,
) -> SymbolSpec:
    return SymbolSpec(
        symbol=symbol,
        base_asset=symbol.removesuffix("USDT"),
        price_precision=pp,
        quantity_precision=qp,
        min_price=Decimal(price[0]),
        max_price=Decimal(price[1]),
        tick_size=Decimal(price[2]),
        min_qty=Decimal(lot[0]),
        max_qty=Decimal(lot[1]),
        step_size=Decimal(lot[2]),
        market_min_qty=Decimal(market_lot[0]),
        market_max_qty=Decimal(market_lot[1]),
        market_step_size=Decimal(market_lot[2]),
        min_notional=Decimal(notional),
        multiplier_up=Decimal("1.0500"),
        multiplier_down=Decimal("0.9500"),
        initial_price=Decimal(initial),
    )


KNOWN_SYMBOLS: dict[str, SymbolSpec] = {
    s.symbol: s
    for s in (
        _spec(
            "BTCUSDT",
            2,
            3,
            ("556.80", "4529764", "0.10"),
            ("0.001", "1000", "0.001"),
            ("0.001", "120", "0.001"),
            "100",
            "50000",
        ),
        _spec(
            "ETHUSDT",
            2,
            3,
            ("39.86", "306177", "0.01"),
            ("0.001", "10000", "0.001"),
            ("0.001", "2000", "0.001"),
            "20",
            "3000",
        ),
        _spec(
            "BNBUSDT",
            3,
            2,
            ("6.600", "100000", "0.010"),
            ("0.01", "100000", "0.01"),
            ("0.01", "2000", "0.01"),
            "5",
            "600",
        ),
        _spec(
            "SOLUSDT",
            4,
            0,
            ("0.4200", "6857", "0.0100"),
            ("1", "1000000", "1"),
            ("1", "5000", "1"),
            "5",
            "150",
        ),
        _spec(
            "XRPUSDT",
            4,
            1,
            ("0.0143", "100000", "0.0001"),
            ("0.1", "10000000", "0.1"),
            ("0.1", "2000000", "0.1"),
            "5",
            "0.6000",
        ),
    )
}


def build_specs(
    symbols: list[str], prices: dict[str, Decimal], overrides: dict[str, dict[str, str]] | None = None
) -> dict[str, SymbolSpec]:
    """Return the specs for ``symbols``, initial prices taken from ``prices`` and fields from ``overrides``.

    ``overrides`` maps a symbol to SymbolSpec field names and values (decimal strings; integers for the
    precisions). Raises ValueError for an unknown symbol or field.
    """
    out: dict[str, SymbolSpec] = {}
    for name in symbols:
        if name not in KNOWN_SYMBOLS:
            raise ValueError(f"unknown symbol {name!r}; known: {', '.join(sorted(KNOWN_SYMBOLS))}")
        fields: dict[str, object] = dict(KNOWN_SYMBOLS[name].__dict__)
        if name in prices:
            fields["initial_price"] = Decimal(prices[name])
        for key, value in (overrides or {}).get(name, {}).items():
            if key not in fields or key in ("symbol", "base_asset"):
                raise ValueError(f"symbol_overrides.{name}: unknown field {key!r}")
            fields[key] = int(value) if key.endswith("_precision") else Decimal(str(value))
        out[name] = SymbolSpec(**fields)  # type: ignore[arg-type]
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
                "multiplierDecimal": "4",
            },
        ],
        "orderTypes": list(ORDER_TYPES),
        "timeInForce": list(TIME_IN_FORCE),
    }


def exchange_info(
    specs: dict[str, SymbolSpec], limits: RateLimitConfig, max_num_orders: int, server_time_ms: int
) -> dict[str, Any]:
    """Return the full exchangeInfo document (timezone, rateLimits, assets, symbols)."""
    return {
        "timezone": "UTC",
        "serverTime": server_time_ms,
        "futuresType": "U_MARGINED",
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": limits.weight_per_minute,
            },
            {
                "rateLimitType": "ORDERS",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": limits.orders_per_minute,
            },
            {
                "rateLimitType": "ORDERS",
                "interval": "SECOND",
                "intervalNum": 10,
                "limit": limits.orders_per_10s,
            },
        ],
        "exchangeFilters": [],
        "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
        "symbols": [symbol_document(s, max_num_orders) for s in specs.values()],
    }
