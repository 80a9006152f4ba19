"""What a gateway call answers while the order store fails over (Redis Sentinel): UNAVAILABLE,
saying so, and for CreateOrder the client_order_id to retry with. The failover itself, on real
servers, is tests/ha/test_sentinel_failover.py."""

from __future__ import annotations

import fakeredis
import grpc
import pytest
import redis.asyncio.sentinel
import redis.exceptions
import redis.sentinel

from order_execution.gateway.commands import Requester
from order_execution.gateway.handlers import Intake
from order_execution.gateway.proto_mapping import place_order_from_pb
from order_execution.gateway.rules_cache import RulesCache
from order_execution.gateway.status_mapping import status_of, store_failure_message
from order_execution.orders.errors import StoreFailingOver, StoreUnavailable
from order_execution.orders.rules_store import RulesStore
from order_execution.orders.store import OrderStore
from order_execution.orders.store_outages import outage_of
from order_execution.runtime.redis_connection import PrimaryChanged, is_cut_off_primary
from order_execution.runtime.settings import RiskSettings
from tests.factories import BTC_RULES
from tests.unit.gateway_harness import limit_order

FAILOVER_ERRORS = [
    redis.asyncio.sentinel.MasterNotFoundError("No master found for 'order-execution'"),
    redis.sentinel.MasterNotFoundError("No master found for 'order-execution'"),
    PrimaryChanged("order store (Redis) primary is cut off from its replicas (NOREPLICAS)"),
    redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
    redis.exceptions.ResponseError("Not enough good replicas to write.", status_code="NOREPLICAS"),
]


@pytest.mark.parametrize("error", FAILOVER_ERRORS, ids=lambda e: type(e).__name__)
def test_a_failover_error_is_unavailable_saying_so(error: redis.exceptions.RedisError) -> None:
    assert status_of(error) is grpc.StatusCode.UNAVAILABLE
    message = store_failure_message(error)
    assert message is not None and message.startswith("order store (Redis) is failing over")


@pytest.mark.parametrize("error", FAILOVER_ERRORS, ids=lambda e: type(e).__name__)
def test_the_store_raises_a_failover_as_an_outage_every_caller_retries(
    error: redis.exceptions.RedisError,
) -> None:
    """The workers, listener and consumer retry StoreUnavailable: a failover must be one, saying so."""
    outage = outage_of(error)
    assert isinstance(outage, StoreFailingOver)
    assert str(outage).startswith("order store (Redis) is failing over")


def test_cut_off_primary_is_recognised_by_its_code_or_its_text() -> None:
    assert is_cut_off_primary(redis.exceptions.ResponseError("x", status_code="NOREPLICAS"))
    assert is_cut_off_primary(redis.exceptions.ResponseError("NOREPLICAS Not enough good replicas"))
    assert not is_cut_off_primary(redis.exceptions.ResponseError("ERR wrong number of arguments"))
    assert store_failure_message(redis.exceptions.ResponseError("ERR wrong number of arguments")) is None


@pytest.mark.parametrize("error", FAILOVER_ERRORS[:3], ids=lambda e: type(e).__name__)
async def test_create_order_during_a_failover_names_the_client_order_id(
    error: redis.exceptions.RedisError, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = fakeredis.FakeAsyncRedis()
    rules_store = RulesStore(client)
    await rules_store.save([BTC_RULES])
    rules = RulesCache(rules_store)
    await rules.load()
    store = OrderStore(client)

    async def failing_over(*args: object, **kwargs: object) -> None:
        raise error

    # Redis fails under the create script's write: the store maps it (orders.store_outages).
    monkeypatch.setattr(store, "_write", failing_over)
    intake = Intake(store, rules, RiskSettings(allowed_symbols=["BTCUSDT"]))
    with pytest.raises(StoreUnavailable) as caught:
        command = place_order_from_pb(limit_order(client_order_id="desk-retry-1"))
        await intake.handle(command, Requester(client="c"))
    text = str(caught.value)
    assert text.startswith("order store (Redis) is failing over")
    assert "Retry with client_order_id 'desk-retry-1' (idempotent)" in text
    assert status_of(caught.value) is grpc.StatusCode.UNAVAILABLE
    await client.aclose()
