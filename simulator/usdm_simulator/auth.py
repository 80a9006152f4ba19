"""Request parameters and authentication exactly as Binance USD-M Futures checks them.

* Parameters come from the query string and, for POST/PUT/DELETE, an urlencoded body; the query string
  wins when a name appears in both.
* ``X-MBX-APIKEY`` must be present and well formed (-2014) and name a known account (-2015, HTTP 401).
* SIGNED endpoints need ``signature`` = hex HMAC-SHA256(secret, query string + body) over the bytes as
  received, with the ``signature`` parameter itself removed and **no** ``&`` between the two parts (-1022),
  and a ``timestamp`` inside ``recvWindow`` (default 5000 ms): -1021 with one of its two messages.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote_plus

from usdm_simulator import errors
from usdm_simulator.errors import BinanceError

_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")
_INT_RE = re.compile(r"^-?[0-9]{1,19}$")
DEFAULT_RECV_WINDOW_MS = 5000


@dataclass(frozen=True)
class Credentials:
    """An account's API key and secret."""

    key: str
    secret: str


def _parse_form(raw: str, into: dict[str, str]) -> None:
    for part in raw.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        if "%" in part or "+" in part:
            name, value = unquote_plus(name), unquote_plus(value)
        into[name] = value


def merge_params(raw_query: str, raw_body: str) -> dict[str, str]:
    """Return the request parameters (urlencoded); query-string values win over body values of one name."""
    params: dict[str, str] = {}
    if raw_body:
        _parse_form(raw_body, params)
    if raw_query:
        _parse_form(raw_query, params)
    return params


def _strip_signature(raw: str) -> str:
    if "signature=" not in raw:
        return raw
    return "&".join(p for p in raw.split("&") if not p.startswith("signature="))


def signature_payload(raw_query: str, raw_body: str) -> str:
    """Return ``totalParams``: query string + body (no separator) without the ``signature`` parameter."""
    return _strip_signature(raw_query) + _strip_signature(raw_body)


def sign(secret: str, payload: str) -> str:
    """Return the lowercase hex HMAC-SHA256 of ``payload`` keyed with ``secret``."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def identify(api_key: str | None, accounts: Mapping[str, Credentials]) -> Credentials:
    """Return the account for the ``X-MBX-APIKEY`` header value.

    Raises -2014 (HTTP 401) when the header is missing or malformed, -2015 (HTTP 401) for an unknown key.
    """
    if not api_key or not _KEY_RE.fullmatch(api_key):
        raise errors.error(errors.BAD_API_KEY_FMT, 401)
    creds = accounts.get(api_key)
    if creds is None:
        raise errors.error(errors.REJECTED_MBX_KEY, 401)
    return creds


def _int_param(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    if not _INT_RE.fullmatch(raw):
        raise errors.mandatory(name) if name == "timestamp" else errors.invalid_parameter(name)
    return int(raw)


def verify_signed(
    creds: Credentials,
    params: Mapping[str, str],
    raw_query: str,
    raw_body: str,
    server_time_ms: int,
    max_recv_window_ms: int,
) -> None:
    """Check ``timestamp``/``recvWindow`` and ``signature`` of a SIGNED request; raise BinanceError if bad.

    Order of checks: timestamp present (-1102), recvWindow valid (-1130), timestamp window (-1021),
    signature present (-1102), signature valid (-1022, compared case-insensitively).
    """
    timestamp = _int_param(params, "timestamp")
    if timestamp is None:
        raise errors.mandatory("timestamp")
    recv_window = _int_param(params, "recvWindow")
    if recv_window is None:
        recv_window = DEFAULT_RECV_WINDOW_MS
    if recv_window <= 0 or recv_window > max_recv_window_ms:
        raise errors.invalid_parameter("recvWindow")
    if timestamp >= server_time_ms + 1000:
        raise errors.timestamp_ahead()
    if server_time_ms - timestamp > recv_window:
        raise errors.timestamp_outside_window()
    given = params.get("signature")
    if not given:
        raise errors.mandatory("signature")
    expected = sign(creds.secret, signature_payload(raw_query, raw_body))
    if not hmac.compare_digest(expected, given.lower()):
        raise BinanceError(errors.INVALID_SIGNATURE, "Signature for this request is not valid.")
