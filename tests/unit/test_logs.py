"""Log lines: the configured format and level, an order's fields on every line about it,
and never a secret, a signature or a signed URL, whoever logs it."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from order_execution.orders.log_fields import order_fields
from order_execution.runtime import logs
from order_execution.runtime.logs import configure_logging, redact
from order_execution.runtime.settings import LoggingSettings
from tests.factories import make_order

SIGNED_URL = (
    "http://127.0.0.1:8090/fapi/v1/order?symbol=BTCUSDT&side=BUY&timestamp=1700000000000"
    "&signature=4f0a9c2e1b7d6a5f3e8c9b0a1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e"
)
SECRET = "Zx9secretValueThatMustNeverAppear0000000000000000000000000000000"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """What `configure` below makes the process log, with the root logger and excepthook restored
    afterwards."""
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level, hook = root.handlers[:], root.level, sys.excepthook
    quiet = {name: logging.getLogger(name).level for name in ("httpx", "aiohttp.client", "urllib3")}
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)
    sys.excepthook = hook
    logging.captureWarnings(False)
    for name, previous in quiet.items():
        logging.getLogger(name).setLevel(previous)


def configure(stream: io.StringIO, level: str, fmt: str, process: str) -> None:
    """configure_logging writing to `stream` (as if it were stderr; pytest swaps stderr per phase)."""
    real = sys.stderr
    sys.stderr = stream
    try:
        configure_logging(LoggingSettings.model_validate({"level": level, "format": fmt}), process=process)
    finally:
        sys.stderr = real


def lines(stream: io.StringIO) -> list[str]:
    return [line for line in stream.getvalue().splitlines() if line]


def test_json_lines_carry_the_orders_fields(captured: io.StringIO) -> None:
    configure(captured, "info", "json", "worker")
    order = make_order(order_id="o-42", client_order_id="oe-42", symbol="ETHUSDT")
    logging.getLogger("order_execution.workers.execution").warning(
        "order %s: retrying", "o-42", extra=order_fields(order)
    )
    [line] = lines(captured)
    entry = json.loads(line)
    assert (
        entry["order_id"] == "o-42" and entry["client_order_id"] == "oe-42" and entry["symbol"] == "ETHUSDT"
    )
    assert (
        entry["level"] == "warning"
        and entry["process"] == "worker"
        and entry["msg"] == "order o-42: retrying"
    )
    assert entry["ts"].endswith("Z")


def test_text_lines_append_the_fields(captured: io.StringIO) -> None:
    configure(captured, "info", "text", "listener")
    order = make_order(order_id="o-7", client_order_id="oe-7", symbol="BTCUSDT")
    logging.getLogger("listener").info("reconciled", extra=order_fields(order))
    [line] = lines(captured)
    assert "listener INFO listener: reconciled" in line
    assert line.endswith("order_id=o-7 client_order_id=oe-7 symbol=BTCUSDT")


def test_level_is_respected(captured: io.StringIO) -> None:
    configure(captured, "warning", "json", "gateway")
    logging.getLogger("x").info("not shown")
    logging.getLogger("x").error("shown")
    assert [json.loads(line)["msg"] for line in lines(captured)] == ["shown"]


@pytest.mark.parametrize(
    "leaky",
    [
        f"GET {SIGNED_URL} failed",
        "headers {'X-MBX-APIKEY': 'abcDEF1234567890'}",
        "wss://fstream.binance.com/ws?listenKey=pqCLWRtvUzq3fNfJQYpKzq4mXAWSYnmwTX5T8yBz3bRZs2wX8dJv1rBm",
        "redis://:hunter2password@10.0.0.5:6379/0 unreachable",
    ],
)
def test_redact_masks_signatures_keys_and_passwords(leaky: str) -> None:
    cleaned = redact(leaky)
    for secret in ("4f0a9c2e1b7d", "abcDEF1234567890", "pqCLWRtvUzq3", "hunter2password"):
        assert secret not in cleaned
    assert logs.REDACTED in cleaned


def test_secrets_from_the_environment_never_appear(
    captured: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BINANCE_SECRET_KEY", SECRET)
    configure(captured, "debug", "json", "worker")
    log = logging.getLogger("order_execution.exchange.client")
    log.info("settings dump: secret_key=%s", SECRET)
    try:
        raise ConnectionError(f"could not reach {SIGNED_URL} with key {SECRET}")
    except ConnectionError:
        log.exception("request failed")
    output = captured.getvalue()
    assert SECRET not in output and "4f0a9c2e1b7d" not in output
    assert "signature=<redacted>" in output


def test_libraries_that_log_urls_are_quiet_and_scrubbed(captured: io.StringIO) -> None:
    configure(captured, "debug", "text", "worker")
    logging.getLogger("httpx").info("HTTP Request: POST %s", SIGNED_URL)  # below WARNING: dropped
    logging.getLogger("aiohttp.client").warning("retrying %s", SIGNED_URL)
    output = captured.getvalue()
    assert "HTTP Request" not in output
    assert "retrying" in output and "4f0a9c2e1b7d" not in output


def test_uncaught_exceptions_are_scrubbed_too(captured: io.StringIO) -> None:
    configure(captured, "info", "json", "gateway")
    try:
        raise RuntimeError(f"boom at {SIGNED_URL}")
    except RuntimeError as exc:
        sys.excepthook(RuntimeError, exc, exc.__traceback__)
    [line] = lines(captured)
    entry = json.loads(line)
    assert entry["level"] == "critical" and "boom at" in entry["exc"] and "4f0a9c2e1b7d" not in entry["exc"]
