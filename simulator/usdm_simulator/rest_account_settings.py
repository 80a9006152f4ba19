"""Handlers of the account-settings endpoints and the dead-man switch, with Binance's shapes and codes.

* ``POST /fapi/v1/countdownCancelAll`` (weight 10): ``symbol``, ``countdownTime`` ms; 0 stops the timer.
  When it runs out, every open order of the symbol is canceled (``ORDER_TRADE_UPDATE`` x=CANCELED each).
* ``POST /fapi/v1/leverage`` (weight 1): ``symbol``, ``leverage`` 1..125 (-4028), -2027 if the current
  position is above what the new leverage allows; pushes ``ACCOUNT_CONFIG_UPDATE``.
* ``POST /fapi/v1/marginType`` (weight 1): ISOLATED or CROSSED; -4046 if unchanged, -4047 with open
  orders, -4048 with a position in the symbol.
* ``GET``/``POST /fapi/v1/positionSide/dual`` (weight 30 / 1): hedge mode on or off; -4059 if unchanged,
  -4067 with open orders, -4068 with any position.
* ``GET /fapi/v1/leverageBracket`` (weight 1): the tiers (one object with ``symbol``, else a list).
"""

from __future__ import annotations

from typing import Any

from usdm_simulator import errors
from usdm_simulator.brackets import MAX_LEVERAGE, max_notional, symbol_brackets
from usdm_simulator.events import account_config_update
from usdm_simulator.models import ZERO, Account
from usdm_simulator.pipeline import Call
from usdm_simulator.state import SimulatorState
from usdm_simulator.symbols import SymbolSpec
from usdm_simulator.validation import parse_bool, require

_SUCCESS = {"code": 200, "msg": "success"}


def _spec(call: Call) -> SymbolSpec:
    spec = call.state.engine.specs.get(require(call.params, "symbol"))
    if spec is None:
        raise errors.error(errors.BAD_SYMBOL)
    return spec


def _integer(call: Call, name: str) -> int:
    raw = require(call.params, name)
    if not raw.isdigit():
        raise errors.mandatory(name)
    return int(raw)


def countdown_cancel_all(call: Call) -> dict[str, Any]:
    """``POST /fapi/v1/countdownCancelAll``: (re)arm or stop the symbol's cancel-all countdown."""
    spec = _spec(call)
    countdown_ms = _integer(call, "countdownTime")
    account, state = call.acct, call.state
    if countdown_ms == 0:
        state.countdowns.disarm(account.key, spec.symbol)
    else:
        state.countdowns.arm(
            account.key,
            spec.symbol,
            state.config.scaled_seconds(countdown_ms / 1000),
            lambda: _cancel_all(state, account, spec.symbol),
        )
    return {"symbol": spec.symbol, "countdownTime": str(countdown_ms)}


def _cancel_all(state: SimulatorState, account: Account, symbol: str) -> None:
    state.engine.cancel_all(account, symbol)


def change_leverage(call: Call) -> dict[str, Any]:
    """``POST /fapi/v1/leverage``: set the symbol's leverage; ``{leverage, maxNotionalValue, symbol}``."""
    spec = _spec(call)
    raw = require(call.params, "leverage")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LEVERAGE:
        raise errors.invalid_leverage(raw)
    leverage = int(raw)
    account, engine = call.acct, call.state.engine
    mark = engine.prices[spec.symbol]
    held = sum((abs(p.amount) * mark for s, p in account.every_position() if s == spec.symbol), ZERO)
    if held > max_notional(leverage):
        raise errors.error(errors.MAX_LEVERAGE_RATIO)
    account.symbol_leverage[spec.symbol] = leverage
    now = call.state.clock.now_ms()
    if call.state.streams.has_listeners(account.key):
        call.state.streams.publish(account.key, account_config_update(spec.symbol, leverage, now))
    return {"leverage": leverage, "maxNotionalValue": str(max_notional(leverage)), "symbol": spec.symbol}


def change_margin_type(call: Call) -> dict[str, Any]:
    """``POST /fapi/v1/marginType``: ISOLATED or CROSSED for the symbol; ``{"code":200,"msg":"success"}``."""
    spec = _spec(call)
    margin_type = require(call.params, "marginType")
    if margin_type not in ("ISOLATED", "CROSSED"):
        raise errors.invalid_parameter("marginType")
    account, engine = call.acct, call.state.engine
    isolated = margin_type == "ISOLATED"
    if isolated == (spec.symbol in account.isolated):
        raise errors.error(errors.NO_NEED_TO_CHANGE_MARGIN_TYPE)
    if engine.open_orders(account, spec.symbol):
        raise errors.error(errors.MARGIN_TYPE_OPEN_ORDERS)
    if any(s == spec.symbol and p.amount != 0 for s, p in account.every_position()):
        raise errors.error(errors.MARGIN_TYPE_POSITION)
    if isolated:
        account.isolated.add(spec.symbol)
    else:
        account.isolated.discard(spec.symbol)
    return dict(_SUCCESS)


def position_mode(call: Call) -> dict[str, Any]:
    """``GET /fapi/v1/positionSide/dual``: ``{"dualSidePosition": true}`` in hedge mode."""
    return {"dualSidePosition": call.acct.dual_side}


def change_position_mode(call: Call) -> dict[str, Any]:
    """``POST /fapi/v1/positionSide/dual``: hedge mode (``true``) or one-way (``false``) for every symbol."""
    require(call.params, "dualSidePosition")
    dual = parse_bool(call.params, "dualSidePosition")
    account, engine = call.acct, call.state.engine
    if dual == account.dual_side:
        raise errors.error(errors.NO_NEED_TO_CHANGE_POSITION_SIDE)
    if engine.open_orders(account, None):
        raise errors.error(errors.POSITION_SIDE_OPEN_ORDERS)
    if any(p.amount != 0 for _, p in account.every_position()):
        raise errors.error(errors.POSITION_SIDE_POSITION)
    account.dual_side = dual
    return dict(_SUCCESS)


def leverage_bracket(call: Call) -> Any:
    """``GET /fapi/v1/leverageBracket``: one symbol's brackets (an object), or every symbol's (a list)."""
    if call.params.get("symbol"):
        return symbol_brackets(_spec(call).symbol)
    return [symbol_brackets(s) for s in call.state.engine.specs]
