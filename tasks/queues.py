"""(Account, symbol) -> queue routing and the actors' names.

Each symbol of each exchange account has its own Dramatiq queue: `orders.<SYMBOL>` for the
account `default` (the name a single-account deployment always used), `orders.<account>.<SYMBOL>`
for any other (account names are lower case, symbols upper case). One busy or broken symbol
never delays another, an account whose ORDERS budget is spent never delays another account
(workers/consumer.py gives each account its own share of a worker's slots), and a worker
replica can be bound to some queues with `--queues`. Key names follow Dramatiq's Redis layout
so its tooling and dashboard still read them.
"""

from __future__ import annotations

from collections.abc import Iterable

from order_execution.orders.model import DEFAULT_ACCOUNT

DRAMATIQ_NAMESPACE = "dramatiq"

SUBMIT_ORDER = "submit_order"
CANCEL_ORDER = "cancel_order"
RECONCILE_ORDER = "reconcile_order"
AMEND_ORDER = "amend_order"
CANCEL_ALL_ORDERS = "cancel_all_orders"

ACTOR_QUEUE = "orders"  # actors' home queue; order messages are routed per symbol


def queue_for(symbol: str, account: str = DEFAULT_ACCOUNT) -> str:
    """The queue that carries every message about `account`'s orders in `symbol`."""
    if account == DEFAULT_ACCOUNT:
        return f"{ACTOR_QUEUE}.{symbol}"
    return f"{ACTOR_QUEUE}.{account}.{symbol}"


def account_of(queue_name: str) -> str:
    """The account whose orders `queue_name` (or its delayed `.DQ` queue) carries."""
    parts = queue_name.split(".")
    return parts[1] if len(parts) > 2 and parts[1].islower() else DEFAULT_ACCOUNT


def queues_for(accounts: Iterable[str], symbols: Iterable[str]) -> list[str]:
    """Every (account, symbol) queue, account by account."""
    wanted = list(symbols)
    return [queue_for(symbol, account) for account in accounts for symbol in wanted]


def queue_key(queue_name: str) -> str:
    return f"{DRAMATIQ_NAMESPACE}:{queue_name}"


def messages_key(queue_name: str) -> str:
    return f"{DRAMATIQ_NAMESPACE}:{queue_name}.msgs"


def doorbell_key(queue_name: str) -> str:
    """A list that gets one entry per enqueue; idle consumers block on it."""
    return f"{DRAMATIQ_NAMESPACE}:{queue_name}.bell"
