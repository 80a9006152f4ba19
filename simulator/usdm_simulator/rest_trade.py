"""Handlers of the trading endpoints: new/test/query/cancel/amend order, open orders, batches, trades."""

from __future__ import annotations

import json
from typing import Any

from usdm_simulator import errors
from usdm_simulator.errors import BinanceError
from usdm_simulator.models import Order
from usdm_simulator.pipeline import Call
from usdm_simulator.symbols import SymbolSpec
from usdm_simulator.validation import (
    check_percent_price,
    check_price,
    check_quantity,
    parse_decimal,
    parse_order,
    parse_order_ref,
    require,
)

MAX_BATCH = 5


def _spec(call: Call) -> SymbolSpec:
    spec = call.state.engine.specs.get(require(call.params, "symbol"))
    if spec is None:
        raise errors.error(errors.BAD_SYMBOL)
    return spec


def _new_order(call: Call, params: dict[str, str] | None = None, dry_run: bool = False) -> dict[str, Any]:
    engine = call.state.engine
    req = parse_order(
        params if params is not None else call.params, engine.specs, engine.prices, call.state.clock.now_ms()
    )
    order = engine.place(call.acct, req, dry_run=dry_run)
    if dry_run:
        return {}
    if req.resp_type == "RESULT":
        return order.to_json(with_time=False)
    return _ack(order)


def _ack(order: Order) -> dict[str, Any]:
    """The ACK reply: the order object as it was when accepted (NEW, nothing executed)."""
    doc = order.to_json(with_time=False)
    pp, qp = order.spec.price_precision, order.spec.quantity_precision
    doc.update(
        status="NEW",
        executedQty=format(0, f".{qp}f"),
        cumQty=format(0, f".{qp}f"),
        cumQuote=format(0, f".{pp + qp}f"),
        avgPrice=format(0, f".{pp}f"),
        updateTime=order.time_ms,
    )
    return doc


def new_order(call: Call) -> dict[str, Any]:
    """``POST /fapi/v1/order``: validate, accept and match; ACK (default) or RESULT reply."""
    return _new_order(call)


def test_order(call: Call) -> dict[str, Any]:
    """``POST /fapi/v1/order/test``: run every check, change nothing, reply ``{}``."""
    return _new_order(call, dry_run=True)


def query_order(call: Call) -> dict[str, Any]:
    """``GET /fapi/v1/order``: the order by orderId or origClientOrderId; -2013 if unknown."""
    spec = _spec(call)
    order_id, client_id = parse_order_ref(call.params)
    return call.state.engine.query(call.acct, spec.symbol, order_id, client_id).to_json()


def query_open_order(call: Call) -> dict[str, Any]:
    """``GET /fapi/v1/openOrder``: like query, but -2013 unless the order is still open."""
    spec = _spec(call)
    order_id, client_id = parse_order_ref(call.params)
    order = call.state.engine.query(call.acct, spec.symbol, order_id, client_id)
    if not order.is_open:
        raise errors.error(errors.NO_SUCH_ORDER)
    return order.to_json()


def cancel_order(call: Call) -> dict[str, Any]:
    """``DELETE /fapi/v1/order``: cancel an open order; -2011 "Unknown order sent." otherwise."""
    spec = _spec(call)
    order_id, client_id = parse_order_ref(call.params)
    return call.state.engine.cancel(call.acct, spec.symbol, order_id, client_id).to_json(with_time=False)


def amend_order(call: Call) -> dict[str, Any]:
    """``PUT /fapi/v1/order``: change price and quantity of an open LIMIT order (same side required)."""
    spec = _spec(call)
    order_id, client_id = parse_order_ref(call.params)
    engine = call.state.engine
    order = engine.find(call.acct, spec.symbol, order_id, client_id)
    if order is None:
        raise errors.error(errors.NO_SUCH_ORDER)
    side = require(call.params, "side")
    if side not in ("BUY", "SELL"):
        raise errors.error(errors.INVALID_SIDE)
    if side != order.side:
        raise errors.invalid_parameter("side")
    quantity = parse_decimal(call.params, "quantity")
    price = parse_decimal(call.params, "price")
    if quantity is None:
        raise errors.mandatory("quantity")
    if price is None:
        raise errors.mandatory("price")
    check_price(spec, price)
    check_quantity(spec, quantity, market=False)
    check_percent_price(spec, side, price, engine.prices[spec.symbol])
    return engine.amend(call.acct, order, quantity, price).to_json(with_time=False)


def open_orders(call: Call) -> list[dict[str, Any]]:
    """``GET /fapi/v1/openOrders``: open orders of one symbol, or of all symbols without ``symbol``."""
    symbol = call.params.get("symbol") or None
    if symbol is not None and symbol not in call.state.engine.specs:
        raise errors.error(errors.BAD_SYMBOL)
    return [o.to_json() for o in call.state.engine.open_orders(call.acct, symbol)]


def cancel_all(call: Call) -> dict[str, Any]:
    """``DELETE /fapi/v1/allOpenOrders``: cancel all open orders in ``symbol``; Binance's code-200 body."""
    spec = _spec(call)
    call.state.engine.cancel_all(call.acct, spec.symbol)
    return {"code": 200, "msg": errors.CANCEL_ALL_DONE_MSG}


def batch_orders(call: Call) -> list[dict[str, Any]]:
    """``POST /fapi/v1/batchOrders``: up to 5 orders (JSON list); failures are inline ``{code,msg}``."""
    raw = require(call.params, "batchOrders")
    try:
        items = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise errors.mandatory("batchOrders") from exc
    if not isinstance(items, list) or not items:
        raise errors.mandatory("batchOrders")
    if len(items) > MAX_BATCH:
        raise BinanceError(errors.INVALID_PARAMETER, "Data sent for parameter 'batchOrders' is not valid.")
    out: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, dict):
            out.append(errors.mandatory("batchOrders").body())
            continue
        try:
            out.append(_new_order(call, {str(k): str(v) for k, v in item.items()}))
        except BinanceError as exc:
            out.append(exc.body())
    return out
