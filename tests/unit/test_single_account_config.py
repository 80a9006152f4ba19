"""The README's single-account configuration works unchanged now that accounts exist.

The README configures one account with `config.example.yaml` (no `accounts:`) and the seed's
variables `BINANCE_API_KEY` / `BINANCE_SECRET_KEY`. That must still be one account, named
`default`, trading with those keys, and everything it writes must keep the names it had before
accounts existed: its queues, its Redis keys, its listener's lease. An upgraded deployment then
finds its queued messages, its orders' client ids, its risk state and its kill switch where
it left them. (Every integration test's stack runs this configuration end to end:
`launcher/stack.py` passes the keys as exactly these variables.)
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import fakeredis
import pytest

from order_execution.exchange.account import account_id, exchange_clients, rate_budget
from order_execution.listener.lease import lease_key
from order_execution.orders.listener_status import ListenerStatus
from order_execution.orders.risk_state import RiskCheck, RiskState
from order_execution.orders.store import OrderStore
from order_execution.runtime.settings import Settings, load_settings
from order_execution.tasks.messages import submit_order_push
from order_execution.tasks.queues import account_of, queues_for
from tests import factories

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"
KEY, SECRET = "readme-" + "k" * 57, "readme-" + "s" * 57  # made up here, as the tests' keys are


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("BINANCE_API_KEY", KEY)
    monkeypatch.setenv("BINANCE_SECRET_KEY", SECRET)
    return load_settings(EXAMPLE)


def test_the_readme_configuration_is_one_account_named_default_with_its_keys(settings: Settings) -> None:
    [account] = settings.trading_accounts
    assert account.name == "default" and account.egress == "default"
    assert account.exchange.api_key.get_secret_value() == KEY
    assert account.exchange.secret_key.get_secret_value() == SECRET
    assert account.exchange.rest_url == settings.exchange.rest_url
    assert queues_for(settings.account_names, settings.symbols) == ["orders.BTCUSDT", "orders.ETHUSDT"]
    assert {account_of(queue) for queue in ("orders.BTCUSDT", "orders.ETHUSDT.DQ")} == {"default"}


async def test_everything_it_writes_keeps_the_names_it_had_before_accounts(settings: Settings) -> None:
    redis = fakeredis.FakeAsyncRedis()
    store = OrderStore.from_settings(redis, settings)
    order = factories.make_order(order_id="o1", client_order_id="cid-1")
    assert order.account == "default"
    await store.create(order, enqueue=submit_order_push, risk=RiskCheck(max_open_orders=10))
    await RiskState(redis, namespace="oe").set_limits(
        settings.risk, {"max_open_orders": 5}, actor="ops", reason="test"
    )
    await ListenerStatus(redis, namespace="oe").publish({"leader": "l1"}, ttl_ms=5000)
    keys = {key.decode() if isinstance(key, bytes) else key for key in await redis.keys("*")}
    assert {
        "oe:order:o1",
        "oe:client:cid-1",
        "oe:orders",
        "oe:orders:BTCUSDT",
        "oe:unsettled",
        "oe:unsent",
        "oe:unsent:BTCUSDT",
        "oe:outbox",
        "oe:risk:reserved",
        "oe:risk:open_qty",
        "oe:risk:limits",
        "oe:listener:status",
        "dramatiq:orders.BTCUSDT",
        "dramatiq:orders.BTCUSDT.msgs",
        "dramatiq:orders.BTCUSDT.bell",
    } <= keys
    assert not [key for key in keys if "@" in key], "an account-scoped key for the single account"
    assert lease_key("oe") == "oe:listener:lease"
    await redis.aclose()


def test_its_budget_is_keyed_by_its_api_key_as_before(settings: Settings) -> None:
    [account] = settings.trading_accounts
    assert account_id(account) == hashlib.sha256(KEY.encode()).hexdigest()[:12]
    budget = rate_budget(fakeredis.FakeAsyncRedis(), settings, account)
    assert budget is not None and budget.limits_key == f"oe:rl:{account_id(account)}:limits"
    assert list(exchange_clients(fakeredis.FakeAsyncRedis(), settings)) == ["default"]
