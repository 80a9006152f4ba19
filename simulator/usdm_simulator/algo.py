"""Conditional orders on the Algo Service (``/fapi/v1/algoOrder`` family), triggered by the reference price.

STOP/STOP_MARKET trigger for a BUY when price ≥ trigger and for a SELL when price ≤ trigger; TAKE_PROFIT
and TAKE_PROFIT_MARKET the other way round; a trailing stop activates at ``activatePrice`` (or at once) and
triggers when the price retraces ``callbackRate`` percent from its best since activation. A condition that
already holds when the order is placed is rejected with -2021. On trigger the algo order becomes TRIGGERED,
places its LIMIT (GTC) or MARKET order on the engine, and ends FINISHED (or REJECTED if that order fails);
each change is pushed as ``ALGO_UPDATE``. ``workingType`` (MARK_PRICE or CONTRACT_PRICE; both watch the one
reference price here) and ``priceProtect`` are checked and echoed; ``closePosition=true`` (STOP_MARKET and
TAKE_PROFIT_MARKET only, without quantity or reduceOnly) fires a reduce-only MARKET order for the whole
position at trigger time, and is REJECTED then if there is no position it would reduce.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from usdm_simulator import errors
from usdm_simulator.algobook import AlgoBook, AlgoOrder
from usdm_simulator.errors import BinanceError
from usdm_simulator.models import ZERO
from usdm_simulator.pipeline import Call
from usdm_simulator.state import SimulatorState
from usdm_simulator.validation import (
    CONDITIONAL_TYPES,
    OrderRequest,
    check_client_order_id,
    check_price,
    check_quantity,
    parse_bool,
    parse_decimal,
    require,
)


def _book(state: SimulatorState) -> AlgoBook:
    return state.algos


def new_algo_order(call: Call) -> dict[str, Any]:
    """``POST /fapi/v1/algoOrder``: validate and park a conditional order; -2021 if it would fire at once."""
    p = call.params
    if require(p, "algoType") != "CONDITIONAL":
        raise errors.invalid_parameter("algoType")
    engine = call.state.engine
    spec = engine.specs.get(require(p, "symbol"))
    if spec is None:
        raise errors.error(errors.BAD_SYMBOL)
    side = require(p, "side")
    if side not in ("BUY", "SELL"):
        raise errors.error(errors.INVALID_SIDE)
    order_type = require(p, "type")
    if order_type not in CONDITIONAL_TYPES:
        raise errors.error(errors.INVALID_ORDER_TYPE)
    close_position = parse_bool(p, "closePosition")
    working_type = p.get("workingType") or "CONTRACT_PRICE"
    if working_type not in ("CONTRACT_PRICE", "MARK_PRICE"):
        raise errors.invalid_parameter("workingType")
    quantity = parse_decimal(p, "quantity")
    if close_position:
        if order_type not in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
            raise errors.invalid_parameter("closePosition")
        if quantity is not None or parse_bool(p, "reduceOnly"):
            raise errors.invalid_parameter("closePosition")
        quantity = ZERO
    elif quantity is None:
        raise errors.mandatory("quantity")
    else:
        check_quantity(spec, quantity, market=order_type.endswith("MARKET"))
    price = ZERO
    if order_type in ("STOP", "TAKE_PROFIT"):
        limit_price = parse_decimal(p, "price")
        if limit_price is None:
            raise errors.mandatory("price")
        check_price(spec, limit_price)
        price = limit_price
    trailing = order_type == "TRAILING_STOP_MARKET"
    trigger = parse_decimal(p, "triggerPrice")
    if trigger is None and not trailing:
        raise errors.mandatory("triggerPrice")
    if trigger is not None:
        check_price(spec, trigger)
    callback = parse_decimal(p, "callbackRate") or ZERO
    if trailing and not Decimal("0.1") <= callback <= Decimal("10"):
        raise errors.invalid_parameter("callbackRate")
    current = engine.prices[spec.symbol]
    activate = parse_decimal(p, "activatePrice") or current
    client_id = p.get("clientAlgoId") or secrets.token_hex(11)
    check_client_order_id(client_id, "clientAlgoId")
    now = call.state.clock.now_ms()
    book = _book(call.state)
    algo = AlgoOrder(
        algo_id=book.next_id(),
        client_algo_id=client_id,
        account_key=call.acct.key,
        spec=spec,
        side=side,
        order_type=order_type,
        quantity=quantity,
        price=price,
        trigger_price=trigger or ZERO,
        time_in_force=p.get("timeInForce") or "GTC",
        reduce_only=parse_bool(p, "reduceOnly"),
        working_type=working_type,
        price_protect=parse_bool(p, "priceProtect"),
        close_position=close_position,
        activate_price=activate if trailing else ZERO,
        callback_rate=callback,
        create_time=now,
        update_time=now,
    )
    if trailing and (activate < current if side == "SELL" else activate > current):
        raise errors.error(errors.ORDER_WOULD_TRIGGER)
    if not trailing and algo.condition_met(current):
        raise errors.error(errors.ORDER_WOULD_TRIGGER)
    book.orders[algo.algo_id] = algo
    call.state.streams.publish(algo.account_key, algo.event(now))
    return algo.to_json()


def query_algo_order(call: Call) -> dict[str, Any]:
    """``GET /fapi/v1/algoOrder``: by algoId or clientAlgoId; -2013 if unknown."""
    algo = _book(call.state).find(call.acct, call.params)
    if algo is None:
        raise errors.error(errors.NO_SUCH_ORDER)
    return algo.to_json()


def cancel_algo_order(call: Call) -> dict[str, Any]:
    """``DELETE /fapi/v1/algoOrder``: cancel a NEW algo order; -2011 if unknown or already done."""
    algo = _book(call.state).find(call.acct, call.params)
    if algo is None or algo.status != "NEW":
        raise errors.error(errors.CANCEL_REJECTED)
    _set_status(call.state, algo, "CANCELED")
    return {"algoId": algo.algo_id, "clientAlgoId": algo.client_algo_id, "code": "200", "msg": "success"}


def open_algo_orders(call: Call) -> list[dict[str, Any]]:
    """``GET /fapi/v1/openAlgoOrders``: the account's NEW algo orders (optionally for ``symbol``)."""
    symbol = call.params.get("symbol")
    return [
        a.to_json()
        for a in _book(call.state).orders.values()
        if a.account_key == call.acct.key and a.status == "NEW" and symbol in (None, a.spec.symbol)
    ]


def all_algo_orders(call: Call) -> list[dict[str, Any]]:
    """``GET /fapi/v1/allAlgoOrders``: every algo order of the account in ``symbol``."""
    symbol = require(call.params, "symbol")
    return [
        a.to_json()
        for a in _book(call.state).orders.values()
        if a.account_key == call.acct.key and a.spec.symbol == symbol
    ]


def cancel_all_algo_orders(call: Call) -> dict[str, Any]:
    """``DELETE /fapi/v1/algoOpenOrders``: cancel the account's NEW algo orders in ``symbol``."""
    symbol = require(call.params, "symbol")
    for algo in list(_book(call.state).orders.values()):
        if algo.account_key == call.acct.key and algo.spec.symbol == symbol and algo.status == "NEW":
            _set_status(call.state, algo, "CANCELED")
    return {"code": 200, "msg": "The operation of cancel all open order is done."}


def _set_status(state: SimulatorState, algo: AlgoOrder, status: str) -> None:
    now = state.clock.now_ms()
    algo.status, algo.update_time = status, now
    state.streams.publish(algo.account_key, algo.event(now))


def on_price(state: SimulatorState) -> Callable[[str, Decimal], None]:
    """Return the engine price listener that fires algo orders of the moved symbol."""

    def fire(symbol: str, price: Decimal) -> None:
        engine = state.engine
        for algo in list(_book(state).orders.values()):
            if algo.status != "NEW" or algo.spec.symbol != symbol or not algo.condition_met(price):
                continue
            algo.trigger_time = state.clock.now_ms()
            _set_status(state, algo, "TRIGGERED")
            market = algo.order_type.endswith("MARKET")
            quantity, reduce_only = algo.quantity, algo.reduce_only
            if algo.close_position:
                held = engine.accounts[algo.account_key].position(symbol).amount
                quantity, reduce_only = abs(held), True
                if held == 0 or (held > 0) == (algo.side == "BUY"):
                    algo.reject_reason = "ReduceOnly Order is rejected."
                    _set_status(state, algo, "REJECTED")
                    continue
            req = OrderRequest(
                spec=algo.spec,
                side=algo.side,
                type="MARKET" if market else "LIMIT",
                time_in_force="GTC" if market else algo.time_in_force,
                quantity=quantity,
                price=ZERO if market else algo.price,
                client_order_id=None,
                reduce_only=reduce_only,
                position_side="BOTH",
                resp_type="ACK",
                stp_mode="EXPIRE_MAKER",
                good_till_date=0,
            )
            try:
                order = engine.place(engine.accounts[algo.account_key], req)
            except BinanceError as exc:
                algo.reject_reason = exc.msg
                _set_status(state, algo, "REJECTED")
                continue
            algo.actual_order_id = str(order.order_id)
            _set_status(state, algo, "FINISHED")

    return fire
