"""Process logging: JSON lines (the default, for log shippers) or plain text for people.

A line about an order carries `order_id`, `client_order_id` and `symbol` as fields:
pass `extra=order_fields(order)` (or `order_ref(order_id)` when only the id is at hand).
JSON puts every such field in the object; text appends them as `key=value`.

Nothing secret reaches the output, whoever logs it (our code, aiohttp, an uncaught
traceback): every line is scrubbed of request signatures (`signature=`), listen keys,
`X-MBX-APIKEY` values, passwords in URLs, and the values of the secret environment
variables (names with KEY, SECRET, PASSWORD or TOKEN), of every secret in the settings
(`configure_logging(..., secrets=settings.secret_values())`: from the YAML file as much as
from the environment) and of anything passed to `add_secrets`; each as written and
percent-encoded (as it appears inside a URL).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from types import TracebackType
from urllib.parse import quote

import orjson

from order_execution.runtime.settings import LoggingSettings

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}
REDACTED = "<redacted>"
# Libraries that log whole request URLs (signed queries) at INFO or DEBUG.
_QUIET_LOGGERS = ("httpx", "httpcore", "urllib3", "aiohttp.access", "aiohttp.client", "websockets")
_PATTERNS = (
    (re.compile(r"(signature=)[^&\s'\"]+", re.IGNORECASE), rf"\g<1>{REDACTED}"),
    (re.compile(r"(listenKey['\"]?\s*[=:]\s*['\"]?)[A-Za-z0-9]+"), rf"\g<1>{REDACTED}"),
    (re.compile(r"(/ws/)[A-Za-z0-9]{20,}"), rf"\g<1>{REDACTED}"),
    (re.compile(r"(X-MBX-APIKEY['\"]?\s*[=:]\s*['\"]?)[^'\"\s,}]+", re.IGNORECASE), rf"\g<1>{REDACTED}"),
    (re.compile(r"(\w+://[^/\s:@]*:)[^@\s/]+@"), rf"\g<1>{REDACTED}@"),
)
_SECRET_ENV = re.compile(r"KEY|SECRET|PASSWORD|TOKEN", re.IGNORECASE)
_MIN_SECRET_LEN = 6  # shorter values would mask ordinary words
_secrets: set[str] = set()
_secrets_longest_first: tuple[str, ...] = ()
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def add_secrets(values: Iterable[str]) -> None:
    """Mask these values wherever they would appear in a log line, as written and percent-encoded
    (empty or very short ones are ignored)."""
    global _secrets_longest_first
    for value in values:
        if len(value) >= _MIN_SECRET_LEN:
            _secrets.update((value, quote(value, safe="")))
    _secrets_longest_first = tuple(sorted(_secrets, key=len, reverse=True))


def redact(text: str) -> str:
    """`text` with known secrets, signatures, listen keys, API-key headers and URL passwords masked."""
    # Known secrets first, longest first: a pattern could otherwise mask part of one (a password
    # holding `@` or `/` ends the URL pattern early) and leave the rest unrecognisable.
    for secret in _secrets_longest_first:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, process, logger, msg, the record's extra fields, exc."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self._process = process

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "level": record.levelname.lower(),
            "process": self._process,
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact(orjson.dumps(entry, default=str).decode())


class TextFormatter(logging.Formatter):
    """`time process LEVEL logger: message key=value ...`, then any traceback."""

    def __init__(self, process: str) -> None:
        super().__init__(f"%(asctime)s {process} %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        if fields:
            head, sep, rest = line.partition("\n")
            line = f"{head} {fields}{sep}{rest}"
        return redact(line)


def configure_logging(settings: LoggingSettings, *, process: str, secrets: Iterable[str] = ()) -> None:
    """Send this process's logs to stderr at the configured level and format, scrubbed of secrets.

    Also masks `secrets` (pass `Settings.secret_values()`) and the secret environment
    variables' values, quiets the libraries that log request URLs, and routes uncaught
    exceptions through the same scrubbing.
    """
    add_secrets(secrets)
    add_secrets(value for name, value in os.environ.items() if _SECRET_ENV.search(name))
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter = (
        JsonFormatter(process) if settings.format == "json" else TextFormatter(process)
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = _LEVELS[settings.level]
    root.setLevel(level)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught


def _log_uncaught(kind: type[BaseException], exc: BaseException, traceback: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, traceback)
        return
    logging.getLogger("uncaught").critical("uncaught exception", exc_info=(kind, exc, traceback))
