"""A worker whose claim (NEW -> SUBMITTING) was stored but whose reply was lost still sends the order.

Seen under `up --ha` (tests/ha/test_up_ha.py) with the Redis primary killed right after a worker
claimed an order: the claim had landed (and was replicated: `order watch` showed SUBMITTING), the
connection died before the answer came back, and the retry found the order SUBMITTING with a live
claim. The worker took its own claim for another worker's ("being sent by another worker; leaving
it"), nobody sent the order, and 20 s later the reconciler rejected it as never placed.
Another worker's live claim is still left alone (tests/unit/test_execution.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest
import redis.exceptions

from order_execution.exchange.client import BinanceClient
from order_execution.orders.model import OrderState
from order_execution.orders.store import OrderStore
from order_execution.orders.store_outages import store_outages
from order_execution.workers.execution import OrderExecutor
from tests.exchange_double import HandlerTransport
from tests.unit.test_execution import Exchange, new_order, order_object

S = OrderState


class ReplyLost:
    """Makes the store's next transition write, then raise the connection error a client sees
    when the server dies before its answer arrives."""

    def __init__(self, store: OrderStore) -> None:
        self.armed = True
        self._transition = store.transition
        store.transition = self.transition  # type: ignore[method-assign]

    async def transition(self, *args: Any, **kwargs: Any) -> Any:
        result = await self._transition(*args, **kwargs)
        if self.armed:
            self.armed = False
            with store_outages():  # what the store raises for it
                raise redis.exceptions.ConnectionError("Connection closed by server.")
        return result


@pytest.fixture
async def executor_and_store() -> AsyncIterator[tuple[OrderExecutor, OrderStore, Exchange]]:
    redis_client = fakeredis.FakeAsyncRedis()
    store = OrderStore(redis_client)
    exchange = Exchange()
    client = BinanceClient(
        "http://exchange.test", api_key="k", secret_key="s", transport=HandlerTransport(exchange.handle)
    )

    async def schedule(*_: Any) -> None:
        return None

    yield (
        OrderExecutor(store=store, exchange=client, max_order_age_ms=5000, schedule_reconcile=schedule),
        store,
        exchange,
    )
    await client.close()
    await redis_client.aclose()


async def test_a_claim_whose_reply_was_lost_is_sent_once(
    executor_and_store: tuple[OrderExecutor, OrderStore, Exchange],
) -> None:
    executor, store, exchange = executor_and_store
    await new_order(store)
    lost = ReplyLost(store)
    exchange.answers.append(order_object("NEW"))
    await executor.submit("o1")
    assert not lost.armed  # the claim's reply was lost once
    assert exchange.posts() == 1
    assert (await store.get("o1")).state is S.SUBMITTED
