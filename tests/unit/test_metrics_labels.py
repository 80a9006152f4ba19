"""Metrics move where things happen, and their label values stay bounded whatever comes in."""

from __future__ import annotations

import json

import httpx
import pytest
from prometheus_client import REGISTRY

from order_execution.exchange import errors
from order_execution.exchange import metrics as exchange_metrics
from order_execution.exchange.breakers import Breakers, Group
from order_execution.exchange.client import BinanceClient
from order_execution.orders import metrics
from order_execution.orders.model import OrderState
from order_execution.runtime.settings import CircuitBreakerSettings
from tests.exchange_double import HandlerTransport
from tests.factories import make_order


def value(metric: str, **labels: str) -> float:
    """The sample's value; a series with an `account` label is read for "default" unless told."""
    if metric.startswith(_ACCOUNT_LABELLED):
        labels = {"account": "default", **labels}
    return REGISTRY.get_sample_value(metric, labels) or 0.0


_ACCOUNT_LABELLED = (
    "order_execution_orders_",
    "order_execution_exchange_",
    "order_execution_rate_limit_hits",
)


def series(name: str) -> set[tuple[tuple[str, str], ...]]:
    """The label sets `name` has in this process."""
    return {
        tuple(sorted(sample.labels.items()))
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name == name
    }


@pytest.fixture(autouse=True)
def _symbols() -> None:
    metrics.set_symbols(["BTCUSDT", "ETHUSDT"])


def test_symbols_outside_the_settings_share_one_label() -> None:
    assert metrics.symbol_label("BTCUSDT") == "BTCUSDT"
    for junk in ("btcusdt", "PWNUSDT", "", "x" * 500):
        assert metrics.symbol_label(junk) == "other"


def test_endpoint_labels_come_from_the_fixed_table() -> None:
    assert exchange_metrics.endpoint_label("POST", "/fapi/v1/order") == "POST /fapi/v1/order"
    assert exchange_metrics.endpoint_label("GET", "/fapi/v1/openOrders") == "GET /fapi/v1/openOrders"
    assert exchange_metrics.endpoint_label("GET", "/fapi/v1/order?symbol=X&signature=ab") == "other"
    assert exchange_metrics.endpoint_label("PATCH", "/fapi/v1/order") == "other"


@pytest.mark.parametrize(
    ("code", "status", "label"),
    [
        (-2019, 400, "-2019"),
        (-5022, 400, "-5022"),
        (-9999, 400, "other"),
        (None, 503, "http_503"),
        (None, 599, "http_other"),
    ],
)
def test_error_codes_collapse_to_known_ones(code: int | None, status: int, label: str) -> None:
    assert exchange_metrics.error_code(errors.OrderRejected("x", code=code, status=status)) == label


def client_answering(status: int, body: object, account: str = "default") -> BinanceClient:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=json.dumps(body).encode())

    return BinanceClient(
        "http://exchange.test",
        api_key="key",
        secret_key="secret",
        transport=HandlerTransport(handler, api_key="key"),
        account=account,
    )


async def test_a_request_counts_once_with_its_latency_and_its_error_code() -> None:
    endpoint = "POST /fapi/v1/order"
    before = (
        value("order_execution_exchange_requests_total", endpoint=endpoint),
        value("order_execution_exchange_latency_seconds_count", endpoint=endpoint),
        value("order_execution_exchange_errors_total", endpoint=endpoint, code="-2019"),
        value("order_execution_exchange_errors_total", endpoint=endpoint, code="other"),
    )
    margin = client_answering(400, {"code": -2019, "msg": "Margin is insufficient."})
    with pytest.raises(errors.OrderRejected):
        await margin.new_order(make_order())
    odd = client_answering(400, {"code": -7777, "msg": "something new"})
    with pytest.raises(errors.OrderRejected):
        await odd.new_order(make_order())
    after = (
        value("order_execution_exchange_requests_total", endpoint=endpoint),
        value("order_execution_exchange_latency_seconds_count", endpoint=endpoint),
        value("order_execution_exchange_errors_total", endpoint=endpoint, code="-2019"),
        value("order_execution_exchange_errors_total", endpoint=endpoint, code="other"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 2, 1, 1]
    assert ("code", "-7777") not in {
        label for labels in series("order_execution_exchange_errors_total") for label in labels
    }
    await margin.close()
    await odd.close()


async def test_429_counts_as_a_rate_limit_hit() -> None:
    before = value("order_execution_rate_limit_hits_total", limit="429")
    client = client_answering(429, {"code": -1003, "msg": "Too many requests"})
    with pytest.raises(errors.RateLimited):
        await client.query_order("BTCUSDT", "oe-1")
    assert value("order_execution_rate_limit_hits_total", limit="429") == before + 1
    await client.close()


def test_order_outcomes_count_once_per_change_with_a_bounded_symbol() -> None:
    def filled(symbol: str) -> float:
        return value("order_execution_orders_filled_total", symbol=symbol)

    before_btc, before_other = filled("BTCUSDT"), filled("other")
    canceled = value("order_execution_orders_canceled_total", symbol="ETHUSDT")
    rejected = value("order_execution_orders_rejected_total", stage="exchange")
    metrics.order_changed(OrderState.SUBMITTED, make_order(symbol="BTCUSDT", state=OrderState.FILLED))
    metrics.order_changed(OrderState.FILLED, make_order(symbol="BTCUSDT", state=OrderState.FILLED))  # a trade
    metrics.order_changed(OrderState.SUBMITTED, make_order(symbol="NOPEUSDT", state=OrderState.FILLED))
    metrics.order_changed(OrderState.PENDING_CANCEL, make_order(symbol="ETHUSDT", state=OrderState.CANCELED))
    metrics.order_changed(OrderState.SUBMITTING, make_order(state=OrderState.REJECTED))
    assert filled("BTCUSDT") == before_btc + 1 and filled("other") == before_other + 1
    assert value("order_execution_orders_canceled_total", symbol="ETHUSDT") == canceled + 1
    assert value("order_execution_orders_rejected_total", stage="exchange") == rejected + 1
    symbols = {dict(labels)["symbol"] for labels in series("order_execution_orders_filled_total")}
    assert "NOPEUSDT" not in symbols and symbols <= {"BTCUSDT", "ETHUSDT", "other"}


def test_breaker_gauge_follows_the_breaker() -> None:
    breakers = Breakers(CircuitBreakerSettings(failure_threshold=2, timeout=30, max_requests=1))
    name = str(Group.CANCEL)
    for _ in range(2):
        with pytest.raises(errors.ExchangeUnavailable), breakers.guard(Group.CANCEL):
            raise errors.ExchangeUnavailable("down")
    assert value("order_execution_circuit_breaker_state", name=name) == 2
    with pytest.raises(errors.CircuitOpen), breakers.guard(Group.CANCEL):
        pass
    assert value("order_execution_circuit_breaker_state", name=name) == 2
    breakers._breakers[Group.CANCEL].close()  # as after its timeout and a successful trial
    breakers.publish_states()
    assert value("order_execution_circuit_breaker_state", name=name) == 0


# --- the account label -------------------------------------------------------------------


@pytest.fixture
def two_accounts() -> None:
    """A process configured with the accounts "a" and "b" (no "default"); conftest restores it."""
    metrics.set_accounts(["a", "b"])


@pytest.mark.usefixtures("two_accounts")
def test_accounts_outside_the_settings_share_one_label() -> None:
    assert metrics.account_label("a") == "a" and metrics.account_label("b") == "b"
    for junk in ("default", "A", "c", "", "x" * 500):
        assert metrics.account_label(junk) == "other"


@pytest.mark.usefixtures("two_accounts")
def test_each_configured_account_has_its_series_at_zero_and_an_unconfigured_default_has_none() -> None:
    accounts = {dict(labels)["account"] for labels in series("order_execution_exchange_errors_total")}
    # "default" (not configured here) was removed; "other" is not made ahead (an earlier test's
    # client of an account not configured then may have counted under it).
    assert {"a", "b"} <= accounts <= {"a", "b", "other"}
    assert (
        value(
            "order_execution_exchange_errors_total", endpoint="POST /fapi/v1/order", code="-2019", account="b"
        )
        == 0
    )
    # ("other" may have counted an earlier test's order of an account not configured then.)
    created = {dict(labels)["account"] for labels in series("order_execution_orders_created_total")}
    assert {"a", "b"} <= created <= {"a", "b", "other"}
    filled = {dict(labels)["account"] for labels in series("order_execution_orders_filled_total")}
    assert filled == {"a", "b", "other"}  # orders of an account no longer configured count as other
    limits = {
        tuple(sorted(dict(labels).items())) for labels in series("order_execution_rate_limit_hits_total")
    }
    assert (("account", "a"), ("limit", "429")) in limits
    assert (("account", ""), ("limit", "client_rate")) in limits  # a client's limit: no account's
    assert (("account", "a"), ("limit", "client_rate")) not in limits


@pytest.mark.usefixtures("two_accounts")
async def test_a_client_counts_under_its_account_and_an_unknown_account_under_other() -> None:
    endpoint = "POST /fapi/v1/order"

    def counted(account: str) -> tuple[float, float, float]:
        return (
            value("order_execution_exchange_requests_total", endpoint=endpoint, account=account),
            value("order_execution_exchange_errors_total", endpoint=endpoint, code="-2019", account=account),
            value("order_execution_exchange_latency_seconds_count", endpoint=endpoint, account=account),
        )

    before = {account: counted(account) for account in ("a", "b", "other")}
    for account in ("b", "b", "zzz"):
        client = client_answering(400, {"code": -2019, "msg": "Margin is insufficient."}, account=account)
        with pytest.raises(errors.OrderRejected):
            await client.new_order(make_order())
        await client.close()
    moved = {
        account: tuple(a - b for a, b in zip(counted(account), before[account], strict=True))
        for account in ("a", "b", "other")
    }
    assert moved == {"a": (0, 0, 0), "b": (2, 2, 2), "other": (1, 1, 1)}
    assert "zzz" not in {
        dict(labels)["account"] for labels in series("order_execution_exchange_requests_total")
    }


@pytest.mark.usefixtures("two_accounts")
async def test_429_and_budget_waits_count_under_the_account_and_client_limits_under_none() -> None:
    before_b = value("order_execution_rate_limit_hits_total", limit="429", account="b")
    before_a = value("order_execution_rate_limit_hits_total", limit="429", account="a")
    client = client_answering(429, {"code": -1003, "msg": "Too many requests"}, account="b")
    with pytest.raises(errors.RateLimited):
        await client.query_order("BTCUSDT", "oe-1")
    await client.close()
    assert value("order_execution_rate_limit_hits_total", limit="429", account="b") == before_b + 1
    assert value("order_execution_rate_limit_hits_total", limit="429", account="a") == before_a
    waits = value("order_execution_rate_limit_hits_total", limit="budget_wait", account="a")
    exchange_metrics.record_budget("budget_wait", "a")
    assert value("order_execution_rate_limit_hits_total", limit="budget_wait", account="a") == waits + 1
    client_rate = value("order_execution_rate_limit_hits_total", limit="client_rate", account="")
    metrics.rate_limit_hit("client_rate", "a")  # a client's own rate: counted as no account's
    assert value("order_execution_rate_limit_hits_total", limit="client_rate", account="") == client_rate + 1
    assert (
        REGISTRY.get_sample_value(
            "order_execution_rate_limit_hits_total", {"limit": "client_rate", "account": "a"}
        )
        is None
    )


@pytest.mark.usefixtures("two_accounts")
def test_order_outcomes_count_under_the_orders_account() -> None:
    def outcome(name: str, account: str, **labels: str) -> float:
        return value(f"order_execution_orders_{name}_total", account=account, **labels)

    before = {
        (name, account): outcome(name, account, **labels)
        for name, labels in (("filled", {"symbol": "BTCUSDT"}), ("rejected", {"stage": "exchange"}))
        for account in ("a", "b", "other")
    }
    metrics.order_changed(
        OrderState.SUBMITTED, make_order(symbol="BTCUSDT", state=OrderState.FILLED, account="b")
    )
    metrics.order_changed(
        OrderState.SUBMITTED, make_order(symbol="BTCUSDT", state=OrderState.FILLED, account="old")
    )
    metrics.order_changed(OrderState.SUBMITTING, make_order(state=OrderState.REJECTED, account="a"))
    after = {
        (name, account): outcome(name, account, **labels)
        for name, labels in (("filled", {"symbol": "BTCUSDT"}), ("rejected", {"stage": "exchange"}))
        for account in ("a", "b", "other")
    }
    moved = {key for key in after if after[key] != before[key]}
    assert moved == {("filled", "b"), ("filled", "other"), ("rejected", "a")}
