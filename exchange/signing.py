"""Binance request signing: HMAC-SHA256, hex, over exactly the bytes sent.

We send every parameter in the query string (POST/DELETE bodies stay empty), so the
signed payload is the query string itself, and `signature` goes last.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from urllib.parse import urlencode


def sign(secret: str, payload: str) -> str:
    """Hex HMAC-SHA256 of `payload` keyed by `secret` (Binance's `signature`)."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def signed_query(params: Iterable[tuple[str, str]], secret: str) -> str:
    """URL-encode `params` in the given order and append `&signature=…` computed over that string."""
    query = urlencode(list(params))
    return f"{query}&signature={sign(secret, query)}"
