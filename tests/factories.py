"""Test data shared by the tests: an order factory, BTCUSDT's trading rules, the seed's metric names."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from order_execution.orders.model import Order, OrderType, Side, TimeInForce
from order_execution.orders.outbox import Outbox
from order_execution.orders.rules import SymbolRules

BTC_RULES = SymbolRules.from_exchange_info(
    {
        "symbol": "BTCUSDT",
        "status": "TRADING",
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "556.80", "maxPrice": "4529764", "tickSize": "0.10"},
            {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "1000", "stepSize": "0.001"},
            {"filterType": "MARKET_LOT_SIZE", "minQty": "0.001", "maxQty": "120", "stepSize": "0.001"},
            {"filterType": "MIN_NOTIONAL", "notional": "100"},
        ],
    }
)


def make_order(**changes: Any) -> Order:
    """A NEW LIMIT GTC BUY of 0.010 BTCUSDT at 50000, with any field overridden."""
    fields: dict[str, Any] = {
        "order_id": "o1",
        "client_order_id": "oe-1",
        "symbol": "BTCUSDT",
        "side": Side.BUY,
        "type": OrderType.LIMIT,
        "quantity": Decimal("0.010"),
        "price": Decimal("50000"),
        "time_in_force": TimeInForce.GTC,
    }
    fields.update(changes)
    return Order(**fields)


async def outbox_orders(client: Any, namespace: str = "oe") -> list[Order]:
    """Every order version written to the outbox so far, oldest first."""
    entries = await Outbox(client, namespace=namespace).range_after("0-0", count=10_000)
    return [entry.order for entry in entries]


async def queued_messages(
    client: Any, symbol: str, account: str = "default"
) -> list[tuple[str, dict[str, Any]]]:
    """(actor name, kwargs) of each Dramatiq message waiting on `account`'s queue of `symbol`,
    oldest first.

    Leaves out `queued`, the copy of the order a submit message carries to save the worker a read.
    """
    from dramatiq import Message

    from order_execution.tasks.queues import messages_key, queue_for, queue_key

    queue = queue_for(symbol, account)
    ids = await client.lrange(queue_key(queue), 0, -1)
    bodies = [await client.hget(messages_key(queue), i) for i in ids]
    messages = [Message.decode(body) for body in bodies if isinstance(body, bytes)]
    return [(m.actor_name, {k: v for k, v in m.kwargs.items() if k != "queued"}) for m in messages]


# The metric names the original service's README promises (its public surface), spelled out here
# rather than imported from the code, so a rename in the code fails the tests.
SEED_METRICS = frozenset(
    {
        "order_execution_orders_created_total",
        "order_execution_orders_filled_total",
        "order_execution_orders_canceled_total",
        "order_execution_orders_rejected_total",
        "order_execution_order_latency_seconds",
        "order_execution_exchange_requests_total",
        "order_execution_exchange_errors_total",
        "order_execution_exchange_latency_seconds",
        "order_execution_rate_limit_hits_total",
        "order_execution_circuit_breaker_state",
        "order_execution_cache_hits_total",
        "order_execution_cache_misses_total",
    }
)
