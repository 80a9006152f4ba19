"""AmendOrder: new price and/or quantity for a resting LIMIT order.

The gateway checks the request against the order and the symbol's filters and queues an
amend message; a worker sends `PUT /fapi/v1/order` and stores the amended version, which
reaches clients as an update like any other change. The order itself is not changed here.
"""

from __future__ import annotations

from decimal import Decimal

from order_execution.gateway.auth import Caller
from order_execution.gateway.commands import AmendOrder
from order_execution.gateway.own_orders import owned_order
from order_execution.gateway.risk import RiskGate
from order_execution.gateway.rules_cache import RulesCache
from order_execution.gateway.validation import check_order_id, check_order_size, parse_request_decimal
from order_execution.orders.errors import (
    InvalidOrder,
    OrderNotAmendable,
    RiskLimitExceeded,
    SymbolRulesUnavailable,
)
from order_execution.orders.exact import product
from order_execution.orders.model import Order, OrderState, OrderType, decimal_str
from order_execution.orders.risk_state import TradingMode
from order_execution.orders.rules import SymbolRules
from order_execution.orders.store import OrderStore
from order_execution.tasks.messages import amend_order_push

_RESTING = (OrderState.SUBMITTED, OrderState.PARTIALLY_FILLED)


async def amend(
    command: AmendOrder,
    caller: Caller | None,
    *,
    store: OrderStore,
    rules: RulesCache,
    risk_gate: RiskGate | None,
) -> Order:
    """Queue the amendment of the order to the command's price / quantity (empty = unchanged);
    returns the order as it is.

    Raises OrderNotFound, OrderNotAmendable (not LIMIT, or not resting), InvalidOrder
    naming the field (filters, quantity not above the filled part, nothing changes), or
    RiskLimitExceeded (`_check_risk`).
    """
    order_id, price, quantity = command.order_id, command.price, command.quantity
    check_order_id(order_id)  # here, not at intake: an amendment is charged before anything is read
    order = await owned_order(store, order_id, caller)
    if order.type is not OrderType.LIMIT:
        raise OrderNotAmendable(f"order {order_id} is {order.type}; only LIMIT orders can be amended")
    if order.state not in _RESTING:
        raise OrderNotAmendable(f"order {order_id} is {order.state}; only a resting order can be amended")
    if not price.strip() and not quantity.strip():
        raise InvalidOrder("price", "price or quantity (or both) is required")
    symbol_rules = rules.current.get(order.symbol)
    if symbol_rules is None:
        raise SymbolRulesUnavailable(f"no trading rules loaded for {order.symbol}")
    assert order.price is not None
    new_price = parse_request_decimal("price", price) if price.strip() else order.price
    new_quantity = parse_request_decimal("quantity", quantity) if quantity.strip() else order.quantity
    symbol_rules.check_price(new_price)
    symbol_rules.check_quantity(new_quantity, OrderType.LIMIT)
    if new_quantity <= order.filled_quantity:
        raise InvalidOrder(
            "quantity", f"must be more than the filled quantity {decimal_str(order.filled_quantity)}"
        )
    symbol_rules.check_notional(new_price, new_quantity, reduce_only=order.reduce_only)
    if new_price == order.price and new_quantity == order.quantity:
        raise InvalidOrder("price", "and quantity equal the order's own; nothing to amend")
    if risk_gate is not None:
        await _check_risk(risk_gate, order, new_price, new_quantity, symbol_rules)
    await store.enqueue(
        amend_order_push(order, price=decimal_str(new_price), quantity=decimal_str(new_quantity))
    )
    return order


async def _check_risk(
    gate: RiskGate, order: Order, price: Decimal, quantity: Decimal, rules: SymbolRules
) -> None:
    """The amended order meets the limits a new one would: order size and notional, the
    price band and PERCENT_PRICE; and while the kill switch is not ACTIVE, an amend may
    not add quantity (a price change, or less quantity, still may).

    Raises RiskLimitExceeded. The position and open-order counts follow the stored
    quantity once the exchange confirms (the store's reservation), not here.
    """
    switch = gate.mode_for(order.account)
    if switch.mode is not TradingMode.ACTIVE and quantity > order.quantity:
        raise RiskLimitExceeded(
            "quantity",
            f"trading is {switch.mode} ({switch.reason or 'no reason given'}); an amend may not add quantity",
            limit="trading_mode",
        )
    check_order_size(product("quantity", price, quantity), quantity, gate.limits_for(order.account))
    await gate.check(order.replace(price=price, quantity=quantity), rules)
