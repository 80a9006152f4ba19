"""Symbol -> queue routing and the actors' names.

Each symbol has its own Dramatiq queue, `orders.<SYMBOL>`, so one busy or broken
symbol never delays another and a worker replica can be bound to some symbols with
`--queues`. Key names follow Dramatiq's Redis layout so its tooling still reads them.
"""

from __future__ import annotations

DRAMATIQ_NAMESPACE = "dramatiq"

SUBMIT_ORDER = "submit_order"
CANCEL_ORDER = "cancel_order"
RECONCILE_ORDER = "reconcile_order"
AMEND_ORDER = "amend_order"
CANCEL_ALL_ORDERS = "cancel_all_orders"

ACTOR_QUEUE = "orders"  # actors' home queue; order messages are routed per symbol


def queue_for(symbol: str) -> str:
    """The queue that carries every message about `symbol`'s orders."""
    return f"{ACTOR_QUEUE}.{symbol}"


def queue_key(queue_name: str) -> str:
    return f"{DRAMATIQ_NAMESPACE}:{queue_name}"


def messages_key(queue_name: str) -> str:
    return f"{DRAMATIQ_NAMESPACE}:{queue_name}.msgs"


def doorbell_key(queue_name: str) -> str:
    """A list that gets one entry per enqueue; idle consumers block on it."""
    return f"{DRAMATIQ_NAMESPACE}:{queue_name}.bell"
