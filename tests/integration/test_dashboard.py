"""The Dramatiq dashboard as a person sees it: `order-execution dashboard` on the real Redis,
orders queued on several symbol queues and one dead letter, pages rendered by headless
Chromium (Debian's `chromium`), and the dashboard's own Requeue and Delete forms posted
as the browser would post them (with its CSRF cookie and token).

Chromium missing: skipped locally, failed in CI (CI=true).
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from dramatiq import Message

from order_execution.launcher.launch import service_command
from order_execution.launcher.processes import ManagedProcess, free_port, http_ok
from order_execution.orders.store import OrderStore
from order_execution.tasks.messages import submit_order_push
from order_execution.tasks.queues import doorbell_key, messages_key, queue_for, queue_key
from order_execution.tasks.redis_queues import QueueClient
from tests.factories import make_order
from tests.redis_dbs import redis_db

pytestmark = pytest.mark.integration

DASHBOARD_REDIS_DB = redis_db(__name__)  # this module's own database: flushed before and after
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
PREFIX = "/dashboard"


def _chromium() -> str:
    found = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
    if found:
        return found
    message = (
        "headless Chromium is not installed; install it with: apt-get install -y chromium chromium-driver"
    )
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


class _Page(HTMLParser):
    """The visible text of a page, and its tables as rows of cell texts."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self._skip = 0
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script"):
            self._skip += 1
        elif tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script"):
            self._skip -= 1
        elif tag in ("td", "th") and self._cell is not None and self.rows:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    @property
    def visible(self) -> str:
        return " ".join("".join(self.text).split())


class Browser:
    """Headless Chromium for what a person sees; a cookie-keeping client for the forms they submit."""

    def __init__(self, base: str, profile: Path) -> None:
        self.base = base
        self._chromium = _chromium()
        self._profile = profile
        self._jar = http.cookiejar.CookieJar()
        self._http = urllib.request.build_opener(_NoRedirect(), urllib.request.HTTPCookieProcessor(self._jar))

    def see(self, path: str) -> _Page:
        """The page at `path` after Chromium has loaded and rendered it (its DOM)."""
        done = subprocess.run(
            [
                self._chromium,
                "--headless",
                "--no-sandbox",  # tests run as root
                "--disable-gpu",
                f"--user-data-dir={self._profile}",
                "--dump-dom",
                self.base + path,
            ],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert "<html" in done.stdout, done.stderr[-2000:]
        return _Page(done.stdout)

    def submit(self, page_path: str, button: str, message_id: str) -> tuple[int, str]:
        """Load `page_path`, fill the form of `button` ("Requeue", "Delete") for `message_id` as
        the page has it, and post it. (status, Location header)."""
        with self._http.open(self.base + page_path) as response:
            html = response.read().decode()
        form = _form_for(html, button, message_id)
        data = urllib.parse.urlencode(form.fields).encode()
        return self.post(form.action, data)

    def post(self, path: str, data: bytes) -> tuple[int, str]:
        request = urllib.request.Request(self.base + path, data=data, method="POST")
        try:
            with self._http.open(request) as response:
                return response.status, response.headers.get("Location", "")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Location", "")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class _Form:
    def __init__(self, action: str, fields: dict[str, str]) -> None:
        self.action, self.fields = action, fields


def _form_for(html: str, button: str, message_id: str) -> _Form:
    for match in re.finditer(r'<form action="([^"]+)" method="POST">(.*?)</form>', html, re.S):
        action, body = match.groups()
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', body))
        if fields.get("id") == message_id and f">{button}</button>" in body:
            return _Form(action, fields)
    raise AssertionError(f"no {button} form for message {message_id} on the page")


@pytest.fixture
def redis_url(real_redis: str) -> Iterator[str]:
    url = f"redis://{real_redis}/{DASHBOARD_REDIS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
async def aredis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def dashboard(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`order-execution dashboard` on a free port; its base URL."""
    for name in list(os.environ):  # whatever the user exported must not steer the test
        if name.startswith("ORDER_EXECUTION") or name in ("REDIS_ADDRESS", "REDIS_PASSWORD"):
            monkeypatch.delenv(name)
    port = free_port()
    env = {
        "REDIS_ADDRESS": redis_url,
        "ORDER_EXECUTION__SYMBOLS": '["' + '", "'.join(SYMBOLS) + '"]',
        "ORDER_EXECUTION__DASHBOARD__PORT": str(port),
        "LOG_FORMAT": "text",
    }
    process = ManagedProcess("dashboard", service_command("dashboard"), env, log_dir=tmp_path, cwd=tmp_path)
    process.start()
    base = f"http://127.0.0.1:{port}"
    try:
        process.wait_until("serving", lambda: http_ok(f"{base}/health"))
        yield base
    finally:
        process.stop()


async def _queue_orders(client: aioredis.Redis) -> dict[str, list[str]]:
    """Two orders on BTCUSDT, two on ETHUSDT, one on SOLUSDT, queued as the gateway queues them."""
    store = OrderStore(client)
    placed: dict[str, list[str]] = {}
    for n, symbol in enumerate(["BTCUSDT", "BTCUSDT", "ETHUSDT", "ETHUSDT", "SOLUSDT"]):
        order = make_order(order_id=f"ord-{symbol}-{n}", client_order_id=f"oe-{n}", symbol=symbol)
        await store.create(order, submit_order_push)
        placed.setdefault(symbol, []).append(order.order_id)
    return placed


async def _dead_letter_one(client: aioredis.Redis, symbol: str) -> tuple[str, str]:
    """A worker takes one message of `symbol`'s queue and dead-letters it, as a failed actor's
    message ends; (its Redis message id, its order id)."""
    queues = QueueClient(client)
    fetched, _ = await queues.fetch([(queue_for(symbol), 1)])
    [(_, [payload])] = fetched
    message = Message.decode(payload)
    redis_id = str(message.options["redis_message_id"])
    await queues.settle(nacks=[(queue_for(symbol), redis_id)])
    return redis_id, str(message.kwargs["order_id"])


def _queue_rows(page: _Page) -> dict[str, list[str]]:
    """The dashboard's queue table: queue name -> [jobs, delayed, failed]."""
    return {row[0]: row[1:4] for row in page.rows if row and row[0].startswith("orders.")}


async def test_the_dashboard_shows_every_symbol_queue_and_requeues_and_deletes(
    dashboard: str, aredis: aioredis.Redis, tmp_path: Path
) -> None:
    placed = await _queue_orders(aredis)
    dead_id, dead_order = await _dead_letter_one(aredis, "ETHUSDT")
    browser = Browser(dashboard, tmp_path / "chromium-profile")

    home = browser.see("/")  # redirected to /dashboard/
    assert "Dramatiq Dashboard" in home.visible
    assert _queue_rows(home) == {
        "orders.BTCUSDT": ["2", "0", "0"],
        "orders.ETHUSDT": ["1", "0", "1"],
        "orders.SOLUSDT": ["1", "0", "0"],
    }

    failed = browser.see(f"{PREFIX}/queues/orders.ETHUSDT/failed")
    assert "Failed (1)" in failed.visible
    assert "submit_order" in failed.visible and dead_order in failed.visible

    job = browser.see(f"{PREFIX}/queues/orders.ETHUSDT/failed/{dead_id}")
    assert ["Redis id", dead_id] in job.rows
    assert ["Actor", "submit_order"] in job.rows
    assert ["Queue", "orders.ETHUSDT (orders.ETHUSDT.XQ)"] in job.rows

    # A forged post (no CSRF token) changes nothing.
    status, _ = browser.post(f"{PREFIX}/delete-message", b"queue=orders.ETHUSDT.XQ&id=" + dead_id.encode())
    assert status == 403
    assert await aredis.zcard(queue_key("orders.ETHUSDT.XQ")) == 1

    # Requeue the dead letter: back on its queue, ready for a worker, whose doorbell rings.
    await aredis.delete(doorbell_key("orders.ETHUSDT"))
    status, location = browser.submit(f"{PREFIX}/queues/orders.ETHUSDT/failed", "Requeue", dead_id)
    assert status == 302, location
    assert await aredis.zcard(queue_key("orders.ETHUSDT.XQ")) == 0
    assert await aredis.llen(queue_key("orders.ETHUSDT")) == 2
    assert await aredis.llen(doorbell_key("orders.ETHUSDT")) == 1
    requeued_ids = await aredis.lrange(queue_key("orders.ETHUSDT"), 0, -1)
    bodies = [await aredis.hget(messages_key("orders.ETHUSDT"), i) for i in requeued_ids]
    requeued = sorted(Message.decode(b).kwargs["order_id"] for b in bodies if isinstance(b, bytes))
    assert requeued == sorted(placed["ETHUSDT"])
    assert _queue_rows(browser.see(f"{PREFIX}/"))["orders.ETHUSDT"] == ["2", "0", "0"]

    # Delete SOLUSDT's message from the ready queue.
    [sol_id] = [
        i.decode() for i in await aredis.lrange(queue_key("orders.SOLUSDT"), 0, -1) if isinstance(i, bytes)
    ]
    sol_page = browser.see(f"{PREFIX}/queues/orders.SOLUSDT")
    assert "Standard (1)" in sol_page.visible and placed["SOLUSDT"][0] in sol_page.visible
    status, _ = browser.submit(f"{PREFIX}/queues/orders.SOLUSDT", "Delete", sol_id)
    assert status == 302
    assert await aredis.llen(queue_key("orders.SOLUSDT")) == 0
    assert await aredis.hlen(messages_key("orders.SOLUSDT")) == 0
    after = browser.see(f"{PREFIX}/")
    assert _queue_rows(after) == {
        "orders.BTCUSDT": ["2", "0", "0"],
        "orders.ETHUSDT": ["2", "0", "0"],
        "orders.SOLUSDT": ["0", "0", "0"],
    }
    assert "There are no jobs in this queue." in browser.see(f"{PREFIX}/queues/orders.SOLUSDT").visible
