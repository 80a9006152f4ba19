"""New-order parameter parsing and exchange-filter checks, with Binance's codes and messages.

Checks run in a fixed order: symbol, side, type (conditional types -4120), time in force, quantity, price,
client order id, flags, then the symbol's filters (precision -1111, price bounds -4013/-4002, tick -4014,
lot bounds -4004/-4005, step -4023, PERCENT_PRICE -4016/-4024, MIN_NOTIONAL -4164 unless reduce-only).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from usdm_simulator import errors
from usdm_simulator.errors import BinanceError
from usdm_simulator.symbols import SymbolSpec

CONDITIONAL_TYPES = frozenset(
    {"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"}
)
TIME_IN_FORCES = frozenset({"GTC", "IOC", "FOK", "GTX", "GTD"})
STP_MODES = frozenset({"NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"})
_DECIMAL_RE = re.compile(r"^[0-9]{1,20}(\.[0-9]{1,20})?$")
_CLIENT_ID_RE = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
_CLIENT_ID_CHARS_RE = re.compile(r"^[\.A-Z\:/a-z0-9_-]*$")


@dataclass(frozen=True)
class OrderRequest:
    """A new LIMIT or MARKET order that passed parameter and filter validation."""

    spec: SymbolSpec
    side: str
    type: str
    time_in_force: str
    quantity: Decimal
    price: Decimal
    client_order_id: str | None
    reduce_only: bool
    position_side: str
    resp_type: str
    stp_mode: str
    good_till_date: int


def parse_decimal(params: Mapping[str, str], name: str) -> Decimal | None:
    """Return the decimal parameter ``name`` or None if absent; -1100 if it is not a plain decimal."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if raw.startswith("-"):
        return Decimal(raw) if _DECIMAL_RE.fullmatch(raw[1:]) else _raise_chars(name)
    if not _DECIMAL_RE.fullmatch(raw):
        _raise_chars(name)
    try:
        return Decimal(raw)
    except InvalidOperation:
        return _raise_chars(name)


def _raise_chars(name: str) -> Decimal:
    raise errors.illegal_chars(name, errors.DECIMAL_LEGAL_RANGE)


def parse_bool(params: Mapping[str, str], name: str) -> bool:
    """Return the ``"true"``/``"false"`` parameter ``name`` (default false); -1130 for other values."""
    raw = params.get(name)
    if raw is None or raw == "":
        return False
    lowered = raw.lower()
    if lowered not in ("true", "false"):
        raise errors.invalid_parameter(name)
    return lowered == "true"


def check_client_order_id(value: str, name: str = "newClientOrderId") -> None:
    """Raise -4015 for an id longer than 36 chars, -1100 for characters outside Binance's regex."""
    if _CLIENT_ID_RE.fullmatch(value):
        return
    if len(value) > 36 and _CLIENT_ID_CHARS_RE.fullmatch(value):
        raise errors.error(errors.INVALID_CL_ORD_ID)
    raise errors.illegal_chars(name, errors.CLIENT_ID_LEGAL_RANGE)


def _decimals(value: Decimal) -> int:
    """Digits after the point, trailing zeros left out; exact (`normalize()` rounds to 28 digits)."""
    return len(format(value, "f").partition(".")[2].rstrip("0"))


def check_price(spec: SymbolSpec, price: Decimal) -> None:
    """Apply precision and PRICE_FILTER to a limit price."""
    if price <= 0:
        raise errors.error(errors.PRICE_LESS_THAN_ZERO)
    if _decimals(price) > spec.price_precision:
        raise errors.error(errors.BAD_PRECISION)
    if price < spec.min_price:
        raise errors.error(errors.PRICE_LESS_THAN_MIN)
    if price > spec.max_price:
        raise errors.error(errors.PRICE_GREATER_THAN_MAX)
    if (price - spec.min_price) % spec.tick_size != 0:
        raise errors.error(errors.PRICE_NOT_ON_TICK)


def check_quantity(spec: SymbolSpec, qty: Decimal, market: bool) -> None:
    """Apply precision and LOT_SIZE (MARKET_LOT_SIZE for market orders) to a quantity."""
    if qty <= 0:
        raise errors.error(errors.QTY_LESS_THAN_ZERO)
    if _decimals(qty) > spec.quantity_precision:
        raise errors.error(errors.BAD_PRECISION)
    lo, hi, step = (
        (spec.market_min_qty, spec.market_max_qty, spec.market_step_size)
        if market
        else (spec.min_qty, spec.max_qty, spec.step_size)
    )
    if qty < lo:
        raise errors.error(errors.QTY_LESS_THAN_MIN)
    if qty > hi:
        raise errors.error(errors.QTY_GREATER_THAN_MAX)
    if (qty - lo) % step != 0:
        raise errors.error(errors.QTY_NOT_ON_STEP)


def check_percent_price(spec: SymbolSpec, side: str, price: Decimal, mark: Decimal) -> None:
    """Apply PERCENT_PRICE relative to the mark (reference) price: -4016 above cap, -4024 below floor."""
    if side == "BUY" and price > mark * spec.multiplier_up:
        raise errors.error(errors.PRICE_ABOVE_CAP)
    if side == "SELL" and price < mark * spec.multiplier_down:
        raise errors.error(errors.PRICE_BELOW_FLOOR)


def _enum(params: Mapping[str, str], name: str, allowed: frozenset[str], default: str) -> str:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if raw not in allowed:
        raise errors.invalid_parameter(name)
    return raw


def parse_order(
    params: Mapping[str, str], specs: Mapping[str, SymbolSpec], mark_price: Mapping[str, Decimal], now_ms: int
) -> OrderRequest:
    """Validate a ``POST /fapi/v1/order`` parameter set; raise BinanceError with Binance's code on failure."""
    symbol = params.get("symbol")
    if not symbol:
        raise errors.mandatory("symbol")
    spec = specs.get(symbol)
    if spec is None:
        raise errors.error(errors.BAD_SYMBOL)
    side = params.get("side")
    if not side:
        raise errors.mandatory("side")
    if side not in ("BUY", "SELL"):
        raise errors.error(errors.INVALID_SIDE)
    order_type = params.get("type")
    if not order_type:
        raise errors.mandatory("type")
    if order_type in CONDITIONAL_TYPES:
        raise errors.error(errors.STOP_ORDER_SWITCH_ALGO)
    if order_type not in ("LIMIT", "MARKET"):
        raise errors.error(errors.INVALID_ORDER_TYPE)
    market = order_type == "MARKET"
    tif = params.get("timeInForce") or ""
    if market:
        tif = "GTC"
    elif not tif:
        raise errors.mandatory("timeInForce")
    elif tif not in TIME_IN_FORCES:
        raise errors.error(errors.INVALID_TIF)
    quantity = parse_decimal(params, "quantity")
    if quantity is None:
        raise errors.mandatory("quantity")
    price = parse_decimal(params, "price")
    if market:
        if price is not None:
            raise errors.not_required("price")
        price = Decimal(0)
    elif price is None:
        raise errors.mandatory("price")
    client_id = params.get("newClientOrderId") or None
    if client_id is not None:
        check_client_order_id(client_id)
    reduce_only = parse_bool(params, "reduceOnly")
    # Whether it fits the account's position mode (-4061) is the engine's check: it knows the account.
    position_side = _enum(params, "positionSide", frozenset({"BOTH", "LONG", "SHORT"}), "BOTH")
    resp_type = _enum(params, "newOrderRespType", frozenset({"ACK", "RESULT"}), "ACK")
    stp_mode = _enum(params, "selfTradePreventionMode", STP_MODES, "EXPIRE_MAKER")
    good_till = 0
    if tif == "GTD":
        raw_gtd = params.get("goodTillDate", "")
        if not raw_gtd.isdigit():
            raise errors.mandatory("goodTillDate")
        good_till = int(raw_gtd)
        if not now_ms + 600_000 < good_till < 253402300799000:
            raise errors.error(errors.GOOD_TILL_DATE)
    if not market:
        check_price(spec, price)
    check_quantity(spec, quantity, market)
    mark = mark_price[spec.symbol]
    if not market:
        check_percent_price(spec, side, price, mark)
    notional = (mark if market else price) * quantity
    if not reduce_only and notional < spec.min_notional:
        raise errors.min_notional(format(spec.min_notional, "f"))
    return OrderRequest(
        spec=spec,
        side=side,
        type=order_type,
        time_in_force=tif,
        quantity=quantity,
        price=price,
        client_order_id=client_id,
        reduce_only=reduce_only,
        position_side=position_side,
        resp_type=resp_type,
        stp_mode=stp_mode,
        good_till_date=good_till,
    )


def require(params: Mapping[str, str], name: str) -> str:
    """Return the non-empty parameter ``name`` or raise -1102."""
    value = params.get(name)
    if not value:
        raise errors.mandatory(name)
    return value


def parse_order_ref(params: Mapping[str, str]) -> tuple[int | None, str | None]:
    """Return (orderId, origClientOrderId) of a query/cancel; -1102 if neither is sent."""
    raw_id = params.get("orderId") or None
    client_id = params.get("origClientOrderId") or None
    if raw_id is None and client_id is None:
        raise errors.mandatory("orderId")
    if raw_id is not None and not raw_id.isdigit():
        raise errors.mandatory("orderId")
    return (int(raw_id) if raw_id is not None else None), client_id


__all__ = ["BinanceError", "OrderRequest", "parse_order"]
