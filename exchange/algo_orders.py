"""Conditional orders on Binance's algo service: the request we send and what its answers mean.

`POST /fapi/v1/algoOrder` takes `algoType=CONDITIONAL`, our client id as `clientAlgoId`,
`triggerPrice` (not for trailing stops, which take `callbackRate` and `activatePrice`).
An algo order reports `algoStatus` (REST) or `X` (ALGO_UPDATE):

  NEW -> WAITING_TRIGGER; TRIGGERING, TRIGGERED, FINISHED -> TRIGGERED (the resulting
  order, `actualOrderId` / `ai`, carries on with its own reports); CANCELED, REJECTED,
  EXPIRED -> the same final state.
"""

from __future__ import annotations

from typing import Any

from order_execution.exchange.errors import ExchangeError
from order_execution.orders.fsm import ExchangeReport
from order_execution.orders.model import Order, OrderState, decimal_str

_ALGO_STATUS = {
    "NEW": OrderState.WAITING_TRIGGER,
    "TRIGGERING": OrderState.TRIGGERED,
    "TRIGGERED": OrderState.TRIGGERED,
    "FINISHED": OrderState.TRIGGERED,
    "CANCELED": OrderState.CANCELED,
    "REJECTED": OrderState.REJECTED,
    "EXPIRED": OrderState.EXPIRED,
}


def algo_order_params(order: Order, position: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The form fields of `POST /fapi/v1/algoOrder` for a conditional `order`; `position` is its
    `reduceOnly` / `positionSide` part for the account's position mode (`exchange.position_mode`)."""
    params = [
        ("algoType", "CONDITIONAL"),
        ("symbol", order.symbol),
        ("side", str(order.side)),
        ("type", str(order.type)),
    ]
    if order.close_position:
        params.append(("closePosition", "true"))
    else:
        params.append(("quantity", decimal_str(order.quantity)))
    if order.type.has_limit_price:
        assert order.price is not None and order.time_in_force is not None
        params += [("price", decimal_str(order.price)), ("timeInForce", str(order.time_in_force))]
    if order.trigger_price is not None:
        params.append(("triggerPrice", decimal_str(order.trigger_price)))
    if order.callback_rate is not None:
        params.append(("callbackRate", decimal_str(order.callback_rate)))
    if order.activation_price is not None:
        params.append(("activatePrice", decimal_str(order.activation_price)))
    if order.working_type is not None:
        params.append(("workingType", str(order.working_type)))
    if order.price_protect:
        params.append(("priceProtect", "TRUE"))
    params += position
    params.append(("clientAlgoId", order.client_order_id))
    return params


def algo_state(status: str) -> OrderState:
    """Our state for an algo status; raises ExchangeError for one we do not know."""
    if status not in _ALGO_STATUS:
        raise ExchangeError(f"unexpected algo order status {status!r}")
    return _ALGO_STATUS[status]


def to_algo_report(reply: dict[str, Any]) -> ExchangeReport:
    """An ExchangeReport from an algo order object (new or query reply).

    Its `exchange_order_id` is the triggered order's id once there is one.
    Raises ExchangeError for a status we do not know.
    """
    status = str(reply.get("algoStatus", ""))
    state = algo_state(status)
    return ExchangeReport(
        state=state,
        exchange_order_id=str(reply.get("actualOrderId") or ""),
        algo_id=str(reply.get("algoId", "")),
        reason=_reject_reason(status, str(reply.get("rejectReason") or "")),
    )


def algo_event_report(o: dict[str, Any]) -> ExchangeReport:
    """An ExchangeReport from an ALGO_UPDATE event's `o` object; raises ExchangeError, KeyError."""
    status = str(o["X"])
    return ExchangeReport(
        state=algo_state(status),
        exchange_order_id=str(o.get("ai") or ""),
        algo_id=str(o.get("aid", "")),
        reason=_reject_reason(status, str(o.get("rm") or "")),
    )


def canceled_algo_report(reply: dict[str, Any]) -> ExchangeReport:
    """The report of a successful `DELETE /fapi/v1/algoOrder` (`{algoId, code: "200", ...}`)."""
    return ExchangeReport(state=OrderState.CANCELED, algo_id=str(reply.get("algoId", "")))


def _reject_reason(status: str, message: str) -> str:
    if status != "REJECTED":
        return ""
    return f"exchange rejected the triggered order: {message}" if message else "exchange status REJECTED"
