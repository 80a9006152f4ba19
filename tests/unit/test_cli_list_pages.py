"""`order list --all` follows page tokens through short and empty pages: the gateway reads a
bounded number of orders per ListOrders call, so only an empty token ends the listing."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest

from order_execution.cli.client import _COMMANDS
from order_execution.cli.order_args import add_order_commands
from order_execution.gateway.proto_mapping import order_to_pb
from order_execution.proto import order_pb2 as pb
from tests.factories import make_order


class PagedStub:
    """ListOrders answering the given pages in turn, each with the token of the next."""

    def __init__(self, pages: list[list[str]]) -> None:
        self.pages = pages
        self.tokens_sent: list[str] = []

    def ListOrders(self, request: pb.ListOrdersRequest, timeout: float) -> pb.ListOrdersResponse:
        self.tokens_sent.append(request.page_token)
        index = int(request.page_token or 0)
        orders = [order_to_pb(make_order(order_id=i, client_order_id=f"c-{i}")) for i in self.pages[index]]
        more = str(index + 1) if index + 1 < len(self.pages) else ""
        return pb.ListOrdersResponse(orders=orders, next_page_token=more)


def listing(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="order-execution order")
    add_order_commands(parser)
    return parser.parse_args(["list", *argv])


PAGES = [[], ["o1", "o2"], [], [], ["o3"], []]


def test_all_follows_tokens_through_empty_pages(capsys: pytest.CaptureFixture[str]) -> None:
    stub: Any = PagedStub(PAGES)
    assert _COMMANDS["list"](stub, listing("--all", "--json")) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [o["order_id"] for o in printed["orders"]] == ["o1", "o2", "o3"]
    assert printed["next_page_token"] == ""
    assert stub.tokens_sent == ["", "1", "2", "3", "4", "5"]


def test_text_listing_says_more_is_coming_not_no_orders(capsys: pytest.CaptureFixture[str]) -> None:
    assert _COMMANDS["list"](PagedStub(PAGES), listing()) == 0  # type: ignore[arg-type]
    assert capsys.readouterr().out.strip() == "(none on this page, more: --page-token 1, or --all)"
    assert _COMMANDS["list"](PagedStub(PAGES), listing("--all")) == 0  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert "o1" in out and "o3" in out and "no orders" not in out
    assert _COMMANDS["list"](PagedStub([[]]), listing("--all")) == 0  # type: ignore[arg-type]
    assert capsys.readouterr().out.strip() == "no orders"
