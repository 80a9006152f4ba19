"""`order-execution order ...` (and `account ...`): arguments, the gateway address, and what a
trader reads."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from order_execution.cli.account import add_account_commands
from order_execution.cli.client import _COMMANDS, gateway_target
from order_execution.cli.order_args import add_order_commands
from order_execution.cli.order_format import order_json, order_line, order_text, update_json
from order_execution.cli.times import format_ms, parse_time
from order_execution.proto import order_pb2 as pb
from order_execution.runtime.settings import load_settings

NOW_MS = 1_796_400_000_000


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="order-execution order")
    add_order_commands(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize(
    "argv",
    [
        ("--target", "10.0.0.5:7000", "get", "abc"),
        ("get", "--target", "10.0.0.5:7000", "abc"),
        ("get", "abc", "--target", "10.0.0.5:7000"),
    ],
)
def test_target_is_accepted_before_or_after_the_subcommand(argv: tuple[str, ...]) -> None:
    args = parse(*argv)
    assert args.target == "10.0.0.5:7000" and args.order_id == "abc"


def test_without_target_the_settings_decide(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray ./config.yaml
    assert not hasattr(parse("get", "abc"), "target")
    monkeypatch.setenv("ORDER_EXECUTION__SERVER__GRPC_PORT", "6000")
    assert gateway_target(load_settings()) == "127.0.0.1:6000"  # 0.0.0.0 is reached on loopback
    monkeypatch.setenv("ORDER_EXECUTION__SERVER__HOST", "gw.internal")
    assert gateway_target(load_settings()) == "gw.internal:6000"
    monkeypatch.setenv("ORDER_EXECUTION__SERVER__HOST", "::1")
    assert gateway_target(load_settings()) == "[::1]:6000"


def test_every_argument_has_help() -> None:
    parser = argparse.ArgumentParser(prog="order-execution order")
    add_order_commands(parser)
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            assert action.help, f"`order {name}` {action.option_strings or action.dest} has no help"


def test_read_commands_take_json_and_list_pages_and_filters_by_time() -> None:
    for command in (("get", "x"), ("list",), ("watch",), ("cancel", "x"), ("create", "BTCUSDT", "BUY", "1")):
        assert parse(*command, "--json").json is True
    args = parse(
        "list", "--all", "--page-token", "tok", "--since", "2026-12-04T10:00:00+00:00", "--until", "1h"
    )
    assert args.all and args.page_token == "tok"
    assert args.since == int(datetime.fromisoformat("2026-12-04T10:00:00+00:00").timestamp() * 1000)


def test_times_read_relative_and_iso() -> None:
    assert parse_time("10m", now_ms=NOW_MS) == NOW_MS - 600_000
    assert parse_time("2h", now_ms=NOW_MS) == NOW_MS - 7_200_000
    assert parse_time("2026-12-04T10:00:00Z", now_ms=NOW_MS) == 1_796_378_400_000
    with pytest.raises(ValueError, match="10m"):
        parse_time("yesterday")


def test_times_are_shown_with_date_and_zone() -> None:
    shown = format_ms(NOW_MS)
    assert datetime.fromisoformat(shown).utcoffset() is not None
    assert int(datetime.fromisoformat(shown).timestamp() * 1000) == NOW_MS


def filled_market_order() -> pb.Order:
    return pb.Order(
        order_id="o1",
        symbol="BTCUSDT",
        side=pb.SELL,
        type=pb.MARKET,
        state=pb.FILLED,
        quantity="0.002",
        filled_quantity="0.002",
        average_price="50000.10",
        fee="0.04",
        fee_asset="USDT",
        created_at=NOW_MS,
        updated_at=NOW_MS + 5,
        version=4,
        fills=[
            pb.Fill(
                trade_id="t9", quantity="0.002", price="50000.10", fee="0.04", fee_asset="USDT", time=NOW_MS
            )
        ],
    )


def test_get_of_a_market_order_shows_fills_fee_and_no_unspecified_enum() -> None:
    text = order_text(filled_market_order())
    assert "UNSPECIFIED" not in text
    assert "time in force  -" in text
    assert "average price  50000.10" in text and "fee            0.04 USDT" in text
    assert "0.002 @ 50000.10, fee 0.04 USDT" in text
    assert format_ms(NOW_MS) in text


def test_json_is_plain_and_complete() -> None:
    data = order_json(filled_market_order())
    assert json.loads(json.dumps(data)) == data
    assert data["time_in_force"] is None and data["type"] == "MARKET" and data["state"] == "FILLED"
    assert data["created_at"] == NOW_MS and data["fills"][0]["price"] == "50000.10"
    update = update_json(
        pb.OrderUpdate(order=filled_market_order(), update_type="FILLED", resume_token="1-0")
    )
    assert update["resume_token"] == "1-0" and update["order"]["order_id"] == "o1"


def test_watch_line_shows_every_state() -> None:
    order = pb.Order(order_id="o2", symbol="BTCUSDT", side=pb.BUY, quantity="0.002", state=pb.SUBMITTING)
    assert "SUBMITTING" in order_line(order, update_type="SUBMITTING")


class RecordingStub:
    """OrderService answering every call with an empty success, recording each request."""

    def __init__(self) -> None:
        self.requests: dict[str, Any] = {}

    def CreateOrder(self, request: pb.CreateOrderRequest, timeout: float) -> pb.CreateOrderResponse:
        self.requests["create"] = request
        return pb.CreateOrderResponse(order=pb.Order(account=request.account))

    def CreateOrders(self, request: pb.CreateOrdersRequest, timeout: float) -> pb.CreateOrdersResponse:
        self.requests["batch"] = request
        return pb.CreateOrdersResponse()

    def ListOrders(self, request: pb.ListOrdersRequest, timeout: float) -> pb.ListOrdersResponse:
        self.requests["list"] = request
        return pb.ListOrdersResponse()

    def CancelAllOrders(
        self, request: pb.CancelAllOrdersRequest, timeout: float
    ) -> pb.CancelAllOrdersResponse:
        self.requests["cancel-all"] = request
        return pb.CancelAllOrdersResponse()

    def StreamOrderUpdates(self, request: pb.StreamOrderUpdatesRequest, timeout: float | None) -> Any:
        self.requests["watch"] = request
        return _EmptyStream()


class _EmptyStream:
    """A stream the gateway ended at once, with no resume token."""

    def __iter__(self) -> Any:
        return iter(())

    def cancel(self) -> None: ...

    def trailing_metadata(self) -> tuple[()]:
        return ()


def test_account_is_sent_by_every_command_that_takes_one(tmp_path: Path) -> None:
    batch_file = tmp_path / "orders.jsonl"
    batch_file.write_text('{"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.001"}\n')
    stub = RecordingStub()
    for argv in (
        ("create", "BTCUSDT", "BUY", "0.001"),
        ("batch", str(batch_file)),
        ("list",),
        ("watch",),
        ("cancel-all", "BTCUSDT"),
    ):
        for account in ("", "hedge"):
            args = parse(*argv, *(("--account", account) if account else ()))
            _COMMANDS[args.order_command](stub, args)  # type: ignore[arg-type]
            assert stub.requests[args.order_command].account == account, argv


def test_order_text_names_the_account_unless_it_is_default() -> None:
    hedged = filled_market_order()
    hedged.account = "hedge"
    assert "account        hedge" in order_text(hedged)
    assert "[hedge]" in order_line(hedged)
    assert order_json(hedged)["account"] == "hedge"
    for account in ("default", ""):  # "": a gateway from before accounts
        plain = filled_market_order()
        plain.account = account
        assert "account" not in order_text(plain) and "[" not in order_line(plain)
        assert order_json(plain)["account"] == "default"


def test_account_commands_take_an_account() -> None:
    parser = argparse.ArgumentParser(prog="order-execution account")
    add_account_commands(parser)
    for argv in (("show",), ("leverage", "BTCUSDT", "5"), ("margin-type", "BTCUSDT", "ISOLATED")):
        assert parser.parse_args([*argv, "--account", "hedge"]).account == "hedge"
        assert parser.parse_args(list(argv)).account == ""
