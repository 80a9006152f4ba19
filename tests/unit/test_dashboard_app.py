"""The dashboard's WSGI app around Dramatiq's dashboard, on fakeredis: routes, health, settings.

What a person sees in a browser, and requeue and delete, are in
tests/integration/test_dashboard.py (real Redis, headless Chromium).
"""

from __future__ import annotations

import io
from typing import Any
from wsgiref.util import setup_testing_defaults

import fakeredis
import pytest
import redis

from order_execution.cli.dashboard import build_app, dashboard_broker, dashboard_url
from order_execution.runtime.settings import (
    AccountSettings,
    DashboardSettings,
    Settings,
    SettingsError,
    load_settings,
)


def _get(app: Any, path: str) -> tuple[str, dict[str, str], str]:
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}
    setup_testing_defaults(environ)
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen["status"], seen["headers"] = status, {name.lower(): value for name, value in headers}
        return lambda data: None

    body = b"".join(app(environ, start_response)).decode()
    return seen["status"], seen["headers"], body


@pytest.fixture
def settings() -> Settings:
    return Settings(symbols=["BTCUSDT", "ETHUSDT", "DOGEUSDT"])


def test_every_symbol_queue_is_listed_even_when_empty(settings: Settings) -> None:
    app = build_app(settings, client=fakeredis.FakeRedis())
    status, _, body = _get(app, "/dashboard/")
    assert status == "200 OK"
    for symbol in settings.symbols:
        assert f"orders.{symbol}" in body


def test_every_account_and_symbol_queue_is_declared_and_listed() -> None:
    settings = Settings(
        symbols=["BTCUSDT", "ETHUSDT"],
        accounts=[
            AccountSettings(name=name, api_key=f"key-{name}", secret_key=f"secret-{name}")
            for name in ("default", "hedge", "arb")
        ],
    )
    client = fakeredis.FakeRedis()
    broker = dashboard_broker(settings, client=client)
    wanted = {
        "orders.BTCUSDT",
        "orders.ETHUSDT",
        "orders.hedge.BTCUSDT",
        "orders.hedge.ETHUSDT",
        "orders.arb.BTCUSDT",
        "orders.arb.ETHUSDT",
    }
    assert wanted <= broker.get_declared_queues()
    status, _, body = _get(build_app(settings, client=client), "/dashboard/")
    assert status == "200 OK"
    for queue in wanted:
        assert f'href="/dashboard/queues/{queue}"' in body, queue


def test_root_and_bare_prefix_redirect_to_the_dashboard(settings: Settings) -> None:
    app = build_app(settings, client=fakeredis.FakeRedis())
    for path in ("/", "/dashboard"):
        status, headers, _ = _get(app, path)
        assert (status, headers["location"]) == ("302 Found", "/dashboard/")


def test_unknown_paths_are_404(settings: Settings) -> None:
    app = build_app(settings, client=fakeredis.FakeRedis())
    assert _get(app, "/metrics")[0] == "404 Not Found"
    assert _get(app, "/dashboardx/")[0] == "404 Not Found"


def test_health_follows_redis(settings: Settings) -> None:
    assert _get(build_app(settings, client=fakeredis.FakeRedis()), "/health")[:1] == ("200 OK",)
    down = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    status, _, body = _get(build_app(settings, client=down), "/health")
    assert status == "503 Service Unavailable"
    assert body.startswith("redis: ")


def test_the_dashboard_listens_on_loopback_unless_told_otherwise() -> None:
    settings = Settings(dashboard=DashboardSettings())  # the defaults, whatever is exported
    assert settings.dashboard.host == "127.0.0.1"
    assert dashboard_url(settings) == f"http://127.0.0.1:{settings.dashboard.port}/dashboard/"
    opened = Settings(dashboard={"host": "0.0.0.0", "port": 9999, "path": "/ops/queues"})
    assert dashboard_url(opened) == "http://127.0.0.1:9999/ops/queues/"


@pytest.mark.parametrize("path", ["dashboard", "/dashboard/", "/", "/a b"])
def test_a_bad_dashboard_path_is_refused_with_its_key(path: str) -> None:
    with pytest.raises(SettingsError, match=r"dashboard\.path"):
        load_settings(dashboard={"path": path})
