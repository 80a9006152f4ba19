"""The messages gateways send to workers, built as atomic queue pushes.

Every message carries its order's exchange `account` (the worker runs it with that account's
client) and goes on that account's queue for the symbol (tasks/queues.py).

A gateway never calls `actor.send()`: it hands a `QueuePush` to the order store, which
writes the order change and the message in one Redis script. An order therefore is
queued exactly when it is stored, and a crash between the two cannot happen.
"""

from __future__ import annotations

from uuid import uuid4

from dramatiq import Message

from order_execution.orders.model import DEFAULT_ACCOUNT, Order
from order_execution.orders.store import QueuePush
from order_execution.tasks.queues import (
    AMEND_ORDER,
    CANCEL_ALL_ORDERS,
    CANCEL_ORDER,
    RECONCILE_ORDER,
    SUBMIT_ORDER,
    doorbell_key,
    messages_key,
    queue_for,
    queue_key,
)


def _push(actor_name: str, order: Order, **extra: str) -> QueuePush:
    return _symbol_push(actor_name, order.symbol, order.account, order_id=order.order_id, **extra)


def _symbol_push(actor_name: str, queue_symbol: str, account: str, **kwargs: str) -> QueuePush:
    queue = queue_for(queue_symbol, account)
    kwargs["account"] = account
    redis_message_id = str(uuid4())
    message: Message[object] = Message(
        queue_name=queue,
        actor_name=actor_name,
        args=(),
        kwargs=kwargs,
        options={"redis_message_id": redis_message_id},
    )
    return QueuePush(
        messages_key=messages_key(queue),
        queue_key=queue_key(queue),
        doorbell_key=doorbell_key(queue),
        message_id=redis_message_id,
        payload=message.encode(),
    )


def submit_order_push(order: Order) -> QueuePush:
    """The message that makes a worker send `order` to the exchange.

    It carries the order as queued, so the worker can claim it without reading it first
    (if the order changed meanwhile, the claim's compare-and-set reads the fresh one).
    """
    return _push(SUBMIT_ORDER, order, queued=order.to_json())


def cancel_order_push(order: Order) -> QueuePush:
    """The message that makes a worker cancel `order` at the exchange."""
    return _push(CANCEL_ORDER, order)


def amend_order_push(order: Order, *, price: str, quantity: str) -> QueuePush:
    """The message that makes a worker amend resting LIMIT `order` to `price` and `quantity`
    (plain decimal strings)."""
    return _push(AMEND_ORDER, order, price=price, quantity=quantity)


def cancel_all_push(symbol: str, account: str = DEFAULT_ACCOUNT) -> QueuePush:
    """The message that makes a worker cancel every open order and algo order of `account` in
    `symbol` at the exchange; each of our orders then settles from its own events."""
    return _symbol_push(CANCEL_ALL_ORDERS, symbol, account, symbol=symbol)


def reconcile_message(order: Order, attempt: int) -> Message[object]:
    """The message that makes a worker query `order` at the exchange (its `attempt`-th time)."""
    return Message(
        queue_name=queue_for(order.symbol, order.account),
        actor_name=RECONCILE_ORDER,
        args=(),
        kwargs={"order_id": order.order_id, "attempt": attempt, "account": order.account},
        options={},
        message_id=str(uuid4()),
    )
