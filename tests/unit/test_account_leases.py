"""Listener leases per exchange account: every replica contends for every account, each account
has one leader, and when a leader dies each of its accounts is taken over on its own."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import fakeredis
import pytest
from prometheus_client import REGISTRY

from order_execution.gateway.health import HealthChecks
from order_execution.gateway.rules_cache import RulesCache
from order_execution.listener.leadership import Leadership
from order_execution.listener.lease import LeaderLease, lease_key
from order_execution.listener.process import Listener
from order_execution.orders.errors import StoreUnavailable
from order_execution.orders.listener_status import ListenerStatus
from order_execution.orders.rules_store import RulesStore
from order_execution.runtime.redis_connection import reply_text
from order_execution.runtime.settings import Settings

ACCOUNTS = ("default", "b")
TTL_MS = 300  # lapses within a test; renewals come well inside it


@pytest.fixture
async def client() -> AsyncIterator[fakeredis.FakeAsyncRedis]:
    fake = fakeredis.FakeAsyncRedis()
    yield fake
    await fake.aclose()


def test_the_account_default_keeps_the_single_account_lease_key_and_others_get_their_own() -> None:
    assert lease_key("oe") == lease_key("oe", "default") == "oe:listener:lease"
    assert lease_key("oe", "b") == "oe:@b:listener:lease"


class Replica:
    """One listener replica's leadership over ACCOUNTS; `led` is what it believes it leads."""

    def __init__(self, client: fakeredis.FakeAsyncRedis, name: str) -> None:
        self.name = name
        self.led: set[str] = set()
        self.leases = {
            account: LeaderLease(client, namespace="oe", holder_id=name, ttl_ms=TTL_MS, account=account)
            for account in ACCOUNTS
        }
        self.leadership = Leadership(self.leases, lead=self._lead, step_down=self._step_down)

    async def _lead(self, account: str) -> None:
        assert account not in self.led
        self.led.add(account)

    async def _step_down(self, account: str) -> None:
        self.led.remove(account)


def assert_one_leader_each(live: list[Replica]) -> dict[str, str]:
    """No account is led by two live replicas; returns each led account's leader."""
    leaders: dict[str, str] = {}
    for replica in live:
        for account in replica.led:
            assert account not in leaders, f"{account} led by {leaders[account]} and {replica.name}"
            leaders[account] = replica.name
    return leaders


async def holders(client: fakeredis.FakeAsyncRedis) -> dict[str, str | None]:
    values = [await client.get(lease_key("oe", account)) for account in ACCOUNTS]
    return {
        account: None if v is None else reply_text(v) for account, v in zip(ACCOUNTS, values, strict=True)
    }


async def test_a_standby_takes_over_every_account_of_a_killed_leader(
    client: fakeredis.FakeAsyncRedis,
) -> None:
    one, two = Replica(client, "r1"), Replica(client, "r2")
    for _ in range(5):  # both renew, each a third of the TTL apart: the first one keeps both
        for replica in (one, two):
            await replica.leadership.renew()
            assert_one_leader_each([one, two])
        await asyncio.sleep(TTL_MS / 3000)
    assert one.led == set(ACCOUNTS) and two.led == set()
    assert await holders(client) == {"default": "r1", "b": "r1"}

    # r1 is killed: it renews nothing and releases nothing. r2 keeps trying every third of the TTL.
    rounds = 0
    while two.led != set(ACCOUNTS):
        rounds += 1
        assert rounds <= 6, "r2 never took every account over"
        await asyncio.sleep(TTL_MS / 3000)
        await two.leadership.renew()
        assert_one_leader_each([two])
    assert await holders(client) == {"default": "r2", "b": "r2"}
    assert two.leadership.leading == frozenset(ACCOUNTS)


async def test_each_account_is_held_on_its_own_and_a_lost_one_is_stepped_down_alone(
    client: fakeredis.FakeAsyncRedis,
) -> None:
    one, two = Replica(client, "r1"), Replica(client, "r2")
    await one.leadership.renew()
    await two.leadership.renew()
    await client.delete(lease_key("oe", "b"))  # b's lease alone lost (a Redis failover, say)
    await two.leadership.renew()
    assert two.led == {"b"}
    await one.leadership.renew()  # r1 finds b taken: it stops leading b, and only b
    assert one.led == {"default"}
    assert assert_one_leader_each([one, two]) == {"default": "r1", "b": "r2"}
    for _ in range(3):  # the split stays as it is
        await one.leadership.renew()
        await two.leadership.renew()
        assert assert_one_leader_each([one, two]) == {"default": "r1", "b": "r2"}


async def test_a_frozen_leader_that_wakes_after_the_takeover_steps_down_and_takes_nothing_back(
    client: fakeredis.FakeAsyncRedis,
) -> None:
    one, two = Replica(client, "r1"), Replica(client, "r2")
    await one.leadership.renew()
    await asyncio.sleep(TTL_MS * 1.5 / 1000)  # r1 froze past its leases
    await two.leadership.renew()
    assert two.led == set(ACCOUNTS)
    await one.leadership.renew()
    assert one.led == set()
    assert await holders(client) == {"default": "r2", "b": "r2"}
    await one.leadership.release()  # nor can it release r2's leases
    assert await holders(client) == {"default": "r2", "b": "r2"}


async def test_an_unreachable_redis_keeps_an_accounts_role(
    client: fakeredis.FakeAsyncRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = Replica(client, "r1")
    await one.leadership.renew()

    async def unreachable() -> bool:
        raise StoreUnavailable("order store (Redis) unreachable; retry shortly")

    monkeypatch.setattr(one.leases["b"], "hold", unreachable)
    await one.leadership.renew()
    assert one.led == set(ACCOUNTS)  # b goes on being led (what it does is safe to do twice)


async def test_a_release_hands_every_account_over_at_once(client: fakeredis.FakeAsyncRedis) -> None:
    one, two = Replica(client, "r1"), Replica(client, "r2")
    await one.leadership.renew()
    await one.leadership.step_down_all()
    await one.leadership.release()
    assert one.led == set() and await holders(client) == {"default": None, "b": None}
    await two.leadership.renew()
    assert two.led == set(ACCOUNTS)


# --- the listener process -------------------------------------------------------------------


def two_accounts() -> Settings:
    accounts = [
        {"name": name, "api_key": secrets.token_hex(8), "secret_key": secrets.token_hex(8)}
        for name in ACCOUNTS
    ]
    return Settings(
        accounts=accounts,
        exchange={"base_url": "http://127.0.0.1:1"},
        listener={"lease_ttl_ms": TTL_MS},
    )


@pytest.fixture
async def replicas(client: fakeredis.FakeAsyncRedis) -> AsyncIterator[tuple[Listener, Listener, list[str]]]:
    """Two listener processes on one Redis; their accounts' work only records that it started."""
    started: list[str] = []
    made = []
    for name in ("r1", "r2"):
        listener = Listener(two_accounts(), holder_id=name, redis=client)
        for account, lead in listener.leads.items():

            def start(who: str = f"{name}:{account}") -> None:
                started.append(who)

            async def stop() -> None:
                pass

            lead.start = start  # type: ignore[method-assign]
            lead.stop = stop  # type: ignore[method-assign]
        made.append(listener)
    yield made[0], made[1], started
    for listener in made:
        for exchange in listener.clients.values():
            await exchange.close()


async def test_a_listener_leads_every_account_with_its_own_lease_and_status(
    replicas: tuple[Listener, Listener, list[str]], client: fakeredis.FakeAsyncRedis
) -> None:
    one, two, started = replicas
    await one.renew()
    await two.renew()
    assert sorted(started) == ["r1:b", "r1:default"]
    assert await holders(client) == {"default": "r1", "b": "r1"}
    statuses = await ListenerStatus(client, namespace="oe").read_accounts(list(ACCOUNTS))
    assert {name: s["leader"] for name, s in statuses.items()} == {"default": "r1", "b": "r1"}
    assert statuses["b"]["account"] == "b"
    # The relay runs under the first account's lease: its fields are in that account's status only.
    assert "nats" in statuses["default"] and "nats" not in statuses["b"]
    assert await client.exists("oe:listener:status") and await client.exists("oe:@b:listener:status")

    await asyncio.sleep(TTL_MS * 1.5 / 1000)  # r1 is killed: its leases and statuses lapse
    await two.renew()
    assert sorted(started) == ["r1:b", "r1:default", "r2:b", "r2:default"]
    statuses = await ListenerStatus(client, namespace="oe").read_accounts(list(ACCOUNTS))
    assert {name: s["leader"] for name, s in statuses.items()} == {"default": "r2", "b": "r2"}

    await two.publish_metrics()
    for account in ACCOUNTS:
        assert REGISTRY.get_sample_value("order_execution_listener_leader", {"account": account}) == 1


async def test_health_lists_each_accounts_listener(
    replicas: tuple[Listener, Listener, list[str]], client: fakeredis.FakeAsyncRedis
) -> None:
    one, _, _ = replicas
    settings = two_accounts()
    checks = HealthChecks(
        settings, one.store, RulesCache(RulesStore(client)), ListenerStatus(client, namespace="oe")
    )
    with pytest.raises(ConnectionError) as no_leader:
        await checks._user_stream()
    assert str(no_leader.value) == (
        "default: no listener leads (fills and reconciliation wait); "
        "b: no listener leads (fills and reconciliation wait)"
    )
    one.leads["default"].stream.connected = True
    one.leads["default"].last_event_ms = 1  # long ago
    await one.renew()
    with pytest.raises(ConnectionError) as b_down:
        await checks._user_stream()
    message = str(b_down.value)
    assert message.startswith("default: connected (listener r1, last event ")
    assert message.endswith("; b: reconnecting (listener r1, no event yet)")
    one.leads["b"].stream.connected = True
    await one.renew()
    assert (await checks._user_stream()).endswith("b: connected (listener r1, no event yet)")


async def test_health_of_the_one_account_default_reads_as_it_always_did(
    client: fakeredis.FakeAsyncRedis,
) -> None:
    settings = Settings(listener={"lease_ttl_ms": TTL_MS})
    listener = Listener(settings, holder_id="r1", redis=client)
    lead = listener.leads["default"]
    lead.start = lambda: None  # type: ignore[method-assign]
    checks = HealthChecks(
        settings, listener.store, RulesCache(RulesStore(client)), ListenerStatus(client, namespace="oe")
    )
    with pytest.raises(LookupError, match=r"^no listener leads: fills, reconciliation and NATS updates wait"):
        await checks._user_stream()
    lead.stream.connected = True
    await listener.renew()
    assert await checks._user_stream() == "connected (listener r1)"
    assert await client.get("oe:listener:lease") == b"r1"
    await listener.clients["default"].close()
