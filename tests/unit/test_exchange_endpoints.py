"""One endpoint table (exchange/endpoints.py) for cost, priority, breaker and metric label: every
endpoint the client calls has a row, so its requests are counted under a label of its own."""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import httpx
from prometheus_client import REGISTRY

from order_execution import exchange
from order_execution.exchange import endpoints
from order_execution.exchange import metrics as exchange_metrics
from order_execution.exchange.client import BinanceClient
from order_execution.orders.metrics import OTHER
from order_execution.orders.model import OrderType
from tests.exchange_double import HandlerTransport
from tests.factories import make_order

# Label values served before the table was one (dashboards and alerts may name them): kept as they were.
SERVED_BEFORE = {
    "POST /fapi/v1/order",
    "DELETE /fapi/v1/order",
    "GET /fapi/v1/order",
    "GET /fapi/v1/openOrders",
    "GET /fapi/v1/userTrades",
    "GET /fapi/v1/time",
    "GET /fapi/v1/ping",
    "GET /fapi/v1/exchangeInfo",
    "POST /fapi/v1/listenKey",
    "PUT /fapi/v1/listenKey",
    "DELETE /fapi/v1/listenKey",
}
# Rows the client never calls, kept only for the label values above.
LABEL_ONLY = {("GET", "/fapi/v1/ping"), ("DELETE", "/fapi/v1/listenKey")}


def _scan_exchange_sources() -> tuple[set[tuple[str, str]], set[str]]:
    """(method, path) of every `_request(...)` call in exchange/*.py, and every string in those
    files' code (not docstrings) that contains "/fapi/"; the table's own module left out."""
    calls: set[tuple[str, str]] = set()
    fapi_strings: set[str] = set()
    for source in sorted(Path(exchange.__file__).parent.glob("*.py")):
        if source.name == Path(endpoints.__file__).name:
            continue
        tree = ast.parse(source.read_text(), filename=str(source))
        docstrings = {
            id(node.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "/fapi/" in node.value:
                if id(node) not in docstrings:
                    fapi_strings.add(node.value)
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "_request":
                method, path = node.args[0], node.args[1]
                assert isinstance(method, ast.Constant) and isinstance(path, ast.Constant), ast.unparse(node)
                calls.add((str(method.value), str(path.value)))
    return calls, fapi_strings


def test_the_scan_finds_the_client_s_requests() -> None:
    calls, fapi_strings = _scan_exchange_sources()
    # Every "/fapi/" string in the client's code is the path of a request it makes (none is sent
    # some other way the scan would miss), and the scan sees a good share of the client.
    assert fapi_strings == {path for _, path in calls}
    assert {("POST", "/fapi/v1/order"), ("GET", "/fapi/v2/positionRisk")} <= calls
    assert len(calls) >= 20


def test_every_endpoint_the_client_calls_has_a_label_of_its_own() -> None:
    for row in endpoints.TABLE:
        assert exchange_metrics.endpoint_label(row.method, row.path) == row.label != OTHER
    calls, _ = _scan_exchange_sources()
    for method, path in sorted(calls):
        row = endpoints.lookup(method, path)
        assert row is not endpoints.UNLISTED, f"{method} {path} has no row in exchange/endpoints.py"
        assert exchange_metrics.endpoint_label(method, path) == f"{method} {path}" != OTHER


def test_the_table_holds_each_endpoint_once_and_only_called_ones_beside_the_kept_labels() -> None:
    calls, _ = _scan_exchange_sources()
    rows = [(row.method, row.path) for row in endpoints.TABLE]
    assert len(rows) == len(set(rows))
    assert set(rows) - calls == LABEL_ONLY
    assert not LABEL_ONLY & calls


def test_label_values_already_served_are_unchanged_and_new_ones_follow_their_naming() -> None:
    assert SERVED_BEFORE <= exchange_metrics.ENDPOINTS
    assert OTHER not in exchange_metrics.ENDPOINTS
    for label in exchange_metrics.ENDPOINTS:
        assert re.fullmatch(r"(GET|POST|PUT|DELETE) /fapi/v[0-9]/[A-Za-z]+(/[A-Za-z]+)?", label), label
    assert exchange_metrics.endpoint_label("GET", "/fapi/v1/nothing") == OTHER
    assert endpoints.lookup("GET", "/fapi/v1/nothing") is endpoints.UNLISTED


def _requests(label: str) -> float:
    labels = {"endpoint": label, "account": "default"}
    return REGISTRY.get_sample_value("order_execution_exchange_requests_total", labels) or 0.0


async def test_every_client_method_counts_its_requests_under_its_own_endpoint() -> None:
    seen: list[tuple[str, str]] = []
    # One body every method can read: a clock, a position mode, a listen key; the rest ignore it.
    body = json.dumps({"serverTime": 1, "dualSidePosition": False, "listenKey": "lk"}).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path))
        return httpx.Response(200, content=body)

    client = BinanceClient(
        "http://exchange.test", api_key="k", secret_key="s", transport=HandlerTransport(handler)
    )
    order = make_order()
    stop = make_order(
        type=OrderType.STOP_MARKET,
        price=None,
        time_in_force=None,
        trigger_price=Decimal("49000"),
        client_order_id="oe-s",
    )
    calls: list[Callable[[], Awaitable[object]]] = [
        client.server_time,
        client.exchange_info,
        client.premium_index,
        lambda: client.new_order(order),
        lambda: client.query_order("BTCUSDT", "oe-1"),
        lambda: client.cancel_order("BTCUSDT", "oe-1"),
        client.open_orders,
        lambda: client.user_trades("BTCUSDT", "7"),
        lambda: client.query_order_by_id("BTCUSDT", "7"),
        lambda: client.cancel_order_by_id("BTCUSDT", "7"),
        lambda: client.amend_order(order, price=Decimal("50100"), quantity=Decimal("0.020")),
        lambda: client.cancel_all_orders("BTCUSDT"),
        lambda: client.new_algo_order(stop),
        lambda: client.query_algo_order("oe-s"),
        lambda: client.cancel_algo_order("oe-s"),
        client.open_algo_orders,
        client.position_mode,
        lambda: client.set_leverage("BTCUSDT", 5),
        lambda: client.set_margin_type("BTCUSDT", "ISOLATED"),
        client.position_risk,
        lambda: client.countdown_cancel_all("BTCUSDT", 0),
        client.create_listen_key,
        client.keepalive_listen_key,
    ]
    labels = sorted(exchange_metrics.ENDPOINTS)
    before = {label: _requests(label) for label in (*labels, OTHER)}
    for call in calls:
        await call()
    await client.close()

    scanned, _ = _scan_exchange_sources()
    assert set(seen) == scanned  # the calls above reach every endpoint the client has
    sent = Counter(f"{method} {path}" for method, path in seen)
    assert {label: _requests(label) - before[label] for label in (*labels, OTHER)} == {
        label: float(sent[label]) for label in (*labels, OTHER)
    }
