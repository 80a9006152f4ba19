"""Signing against Binance's published HMAC-SHA256 example (General Info, example 1)."""

from __future__ import annotations

from urllib.parse import parse_qsl

from order_execution.exchange.signing import sign, signed_query

SECRET = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"
PAYLOAD = (
    "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC"
    "&recvWindow=5000&timestamp=1591702613943"
)
EXPECTED = "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"


def test_binance_published_vector() -> None:
    assert sign(SECRET, PAYLOAD) == EXPECTED


def test_signed_query_signs_exactly_what_it_sends_and_puts_signature_last() -> None:
    params = list(parse_qsl(PAYLOAD))
    query = signed_query(params, SECRET)
    assert query == f"{PAYLOAD}&signature={EXPECTED}"


def test_parameter_order_is_preserved_not_sorted() -> None:
    query = signed_query([("timestamp", "1"), ("symbol", "BTCUSDT")], "k")
    assert query.startswith("timestamp=1&symbol=BTCUSDT&signature=")
    assert query.endswith(sign("k", "timestamp=1&symbol=BTCUSDT"))
