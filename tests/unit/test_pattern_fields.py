"""Every pattern-checked field refuses a trailing newline: checks use `fullmatch`, not `match` with `$`.

`re.match(r"^...$", "abc\\n")` matches, since `$` also matches before a final newline; so did
`\\d`, which matches any Unicode digit. Each field below is fed its valid value with "\\n" and
"\\r\\n" appended, and the error must name the field.
"""

from __future__ import annotations

from typing import Any

import fakeredis
import grpc
import pytest
from usdm_simulator import validation as sim_validation
from usdm_simulator.auth import Credentials, identify
from usdm_simulator.errors import BinanceError
from usdm_simulator.stream_names import parse_stream
from usdm_simulator.symbols import build_specs

from order_execution.cli.times import parse_time
from order_execution.gateway.validation import check_stream_request, check_symbol_text
from order_execution.orders.errors import InvalidOrder
from order_execution.orders.model import now_ms
from order_execution.orders.outbox import Outbox
from order_execution.proto import order_pb2 as pb
from order_execution.runtime.settings import RiskSettings
from tests.factories import BTC_RULES
from tests.unit.gateway_harness import limit_order, validated_order

RULES = {"BTCUSDT": BTC_RULES}
RISK = RiskSettings(allowed_symbols=["BTCUSDT"])
ENDINGS = ["\n", "\r\n"]
# ASCII digits to Arabic-Indic ones (U+0660-U+0669): `\d`, int() and float() all take those.
ARABIC_INDIC = str.maketrans("0123456789", "".join(chr(0x660 + n) for n in range(10)))


def request(**changes: Any) -> pb.CreateOrderRequest:
    return limit_order(**{"client_order_id": "shape-1", "user_id": "alice", **changes})


def test_the_valid_request_passes() -> None:
    order = validated_order(request(), RULES, RISK)
    assert (order.client_order_id, order.symbol, order.user_id) == ("shape-1", "BTCUSDT", "alice")


@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize(
    ("field", "valid"), [("client_order_id", "shape-1"), ("symbol", "BTCUSDT"), ("user_id", "alice")]
)
def test_create_order_fields_refuse_a_trailing_newline(field: str, valid: str, ending: str) -> None:
    with pytest.raises(InvalidOrder) as refused:
        validated_order(request(**{field: valid + ending}), RULES, RISK)
    assert refused.value.field == field


@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize(
    ("field", "changes"),
    [
        ("quantity", {}),
        ("price", {}),
        ("trigger_price", {"type": pb.STOP, "trigger_price": "50000.1"}),
        (
            "callback_rate",
            {"type": pb.TRAILING_STOP_MARKET, "price": "", "time_in_force": 0, "callback_rate": "1"},
        ),
        (
            "activation_price",
            {
                "type": pb.TRAILING_STOP_MARKET,
                "price": "",
                "time_in_force": 0,
                "callback_rate": "1",
                "activation_price": "50000.1",
            },
        ),
    ],
)
def test_decimal_fields_refuse_a_trailing_newline(field: str, changes: dict[str, Any], ending: str) -> None:
    valid = request(**changes)
    validated_order(valid, RULES, RISK)  # passes as it is
    with pytest.raises(InvalidOrder) as refused:
        validated_order(request(**{**changes, field: getattr(valid, field) + ending}), RULES, RISK)
    assert refused.value.field == field and "plain decimal string" in refused.value.rule


@pytest.mark.parametrize("ending", ENDINGS)
def test_stream_fields_refuse_a_trailing_newline(ending: str) -> None:
    check_stream_request(["BTCUSDT"], "alice", "1700000000000-0")  # the valid ones pass
    with pytest.raises(InvalidOrder) as refused:
        check_stream_request(["BTCUSDT" + ending], "", "")
    assert refused.value.field == "symbols"
    with pytest.raises(InvalidOrder) as refused:
        check_stream_request([], "alice" + ending, "")
    assert refused.value.field == "user_id"


@pytest.mark.parametrize("spoil", ["\n", "\r\n", "arabic-indic digits"])
def test_a_resume_token_is_ascii_digits_without_a_trailing_newline(spoil: str) -> None:
    outbox = Outbox(fakeredis.FakeAsyncRedis())
    token = f"{now_ms()}-0"  # young: inside the retention
    assert outbox.check_resume_token(token) == token
    spoilt = token.translate(ARABIC_INDIC) if spoil == "arabic-indic digits" else token + spoil
    with pytest.raises(InvalidOrder) as refused:
        outbox.check_resume_token(spoilt)
    assert refused.value.field == "resume_token"


@pytest.mark.parametrize("ending", ENDINGS)
def test_symbol_filters_of_list_and_cancel_all_refuse_a_trailing_newline(ending: str) -> None:
    check_symbol_text("symbol", "BTCUSDT")
    with pytest.raises(InvalidOrder, match=r"^symbol: must be 2-30 upper-case letters"):
        check_symbol_text("symbol", "BTCUSDT" + ending)


def test_a_relative_cli_time_takes_ascii_digits_only() -> None:
    assert parse_time("10m", now_ms=3_600_000) == 3_000_000
    with pytest.raises(ValueError, match="is not a time"):
        parse_time("10m".translate(ARABIC_INDIC), now_ms=3_600_000)
    with pytest.raises(ValueError, match="is not a time"):
        parse_time("10m\nx", now_ms=3_600_000)


@pytest.mark.parametrize("ending", ENDINGS)
def test_the_simulator_refuses_a_trailing_newline_as_binance_does(ending: str) -> None:
    with pytest.raises(BinanceError):
        sim_validation.check_client_order_id("oe-1" + ending)
    with pytest.raises(BinanceError):
        sim_validation.parse_decimal({"price": "50000.1" + ending}, "price")
    assert sim_validation.parse_decimal({"price": "50000.1"}, "price") is not None
    accounts = {"key1": Credentials("key1", "secret")}
    assert identify("key1", accounts).key == "key1"
    with pytest.raises(BinanceError):
        identify("key1" + ending, accounts)
    specs = build_specs(["BTCUSDT"], {})
    assert parse_stream("btcusdt@aggTrade", specs).kind == "aggTrade"
    with pytest.raises(BinanceError):
        parse_stream("btcusdt@aggTrade" + ending, specs)


async def test_a_client_order_id_with_a_newline_is_refused_over_grpc(gateway: Any) -> None:
    stub, redis = gateway
    before = sorted(await redis.keys("*"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateOrder(request(client_order_id="shape-1\n"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("client_order_id: must be 1-36 characters")
    assert sorted(await redis.keys("*")) == before
