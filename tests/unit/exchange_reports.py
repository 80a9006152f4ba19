"""What the exchange says about one order, written as Binance sends it, read by the service's own
parsers and applied the way the service applies it; and the service's own decisions about it.

Each function returns a `Move`: a named change of an order, `Order -> Order | None` (None: it
changes nothing), the shape `OrderStore.transition` takes, so a test reads as the sequence of
what happened and hypothesis names a failing sequence step by step.

Where the news comes from, and the functions that read it (the same ones the service calls):
* `rest`: an order object, the answer to POST, GET, DELETE or PUT /fapi/v1/order
  (`exchange.answers.to_report`), as the worker and `service_layer.order_sync` apply it;
* `query`: the same with its trades from GET /fapi/v1/userTrades (`to_fill`), as `order_sync`
  adds them when fills are missing;
* `event`: an ORDER_TRADE_UPDATE (`exchange.user_stream.parse_order_event`), applied as the
  listener does (an AMENDMENT's new terms first, then the report);
* `algo_reply`, `algo_event`, `algo_canceled`: the algo service's answers, ALGO_UPDATE events
  and the answer to DELETE /fapi/v1/algoOrder (`exchange.algo_orders`);
* `local`, `claim`, `cancel_request`: the service's own decisions (`fsm.transition`, and the
  gateway's `request_cancel`).

`HISTORIES` are whole lives of an order told this way, each with how it must end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from order_execution.exchange.algo_orders import canceled_algo_report, to_algo_report
from order_execution.exchange.answers import to_fill, to_report
from order_execution.exchange.user_stream import parse_algo_event, parse_order_event
from order_execution.orders import fsm
from order_execution.orders.model import Order, OrderState, OrderType
from order_execution.service_layer.kill_switch import request_cancel
from tests import factories

S = OrderState
CLIENT_ID = "oe-1"  # factories.make_order's client id, sent as newClientOrderId / clientAlgoId
EXCHANGE_ID = 77  # the exchange's orderId (for a conditional order: the order its trigger placed)
ALGO_ID = 1000000001  # the algo service's algoId


@dataclass(frozen=True, slots=True)
class Move:
    """One thing that happens to an order; `change` returns None when it changes nothing."""

    name: str
    change: Callable[[Order], Order | None]

    def __repr__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Trade:
    """One trade of the order, as the exchange numbers it."""

    trade_id: int
    quantity: str
    price: str
    fee: str

    def user_trades_row(self) -> dict[str, Any]:
        """The trade as a row of GET /fapi/v1/userTrades."""
        return {
            "id": self.trade_id,
            "orderId": EXCHANGE_ID,
            "qty": self.quantity,
            "price": self.price,
            "commission": self.fee,
            "commissionAsset": "USDT",
            "maker": False,
            "time": 1_700_000_000_000 + self.trade_id,
        }


def limit_order(state: OrderState = OrderState.NEW, **changes: Any) -> Order:
    """A LIMIT GTC BUY of 0.010 BTCUSDT at 50000 (factories.make_order) in `state`."""
    return factories.make_order(state=state, **changes)


def stop_order(state: OrderState = OrderState.SUBMITTING, **changes: Any) -> Order:
    """A STOP_MARKET BUY of 0.010 BTCUSDT triggering at 51000, in `state`."""
    return factories.make_order(
        type=OrderType.STOP_MARKET,
        price=None,
        time_in_force=None,
        trigger_price=Decimal(51000),
        state=state,
        **changes,
    )


def run(order: Order, *moves: Move) -> Order:
    """`order` after each move in turn; a move that changes nothing leaves it as it was (as in the store)."""
    for move in moves:
        order = move.change(order) or order
    return order


def _report_move(name: str, report: fsm.ExchangeReport) -> Move:
    return Move(name, lambda order: fsm.apply_report(order, report))


def _order_object(status: str, executed: str, average: str, **more: Any) -> dict[str, Any]:
    return {
        "orderId": EXCHANGE_ID,
        "clientOrderId": CLIENT_ID,
        "symbol": "BTCUSDT",
        "status": status,
        "executedQty": executed,
        "avgPrice": average,
        **more,
    }


def rest(status: str, executed: str = "0", average: str = "0") -> Move:
    """An answer of /fapi/v1/order (POST, GET or DELETE) with Binance's `status`."""
    report = to_report(_order_object(status, executed, average))
    return _report_move(f"rest {status} executedQty={executed}", report)


def query(status: str, executed: str, average: str, *trades: Trade) -> Move:
    """GET /fapi/v1/order and then its trades from userTrades, combined as `order_sync` does."""
    report = to_report(_order_object(status, executed, average))
    report = replace(report, fills=tuple(to_fill(t.user_trades_row()) for t in trades))
    ids = ",".join(str(t.trade_id) for t in trades)
    return _report_move(f"query {status} executedQty={executed} trades=[{ids}]", report)


def event(
    status: str,
    *,
    execution: str = "",
    cumulative: str = "0",
    average: str = "0",
    trade: Trade | None = None,
    amended_to: tuple[str, str] | None = None,
) -> Move:
    """An ORDER_TRADE_UPDATE: `X` status, `x` execution type (TRADE with `trade`, AMENDMENT with
    `amended_to` = (price, quantity), else the status), `z` cumulative, `ap` average price."""
    execution = execution or ("TRADE" if trade else "AMENDMENT" if amended_to else status)
    price, quantity = amended_to or ("50000", "0.010")
    o: dict[str, Any] = {
        "s": "BTCUSDT",
        "c": CLIENT_ID,
        "x": execution,
        "X": status,
        "i": EXCHANGE_ID,
        "p": price,
        "q": quantity,
        "z": cumulative,
        "ap": average,
        "t": trade.trade_id if trade else 0,
        "l": trade.quantity if trade else "0",
        "L": trade.price if trade else "0",
        "n": trade.fee if trade else "0",
        "N": "USDT" if trade else "",
        "m": False,
        "T": 1_700_000_000_000,
    }
    parsed = parse_order_event({"e": "ORDER_TRADE_UPDATE", "E": 1_700_000_000_001, "o": o})
    # As the listener applies it (listener.order_events): an amendment's new terms, then the report.
    terms = parsed.amended

    def change(order: Order) -> Order | None:
        amended = fsm.amend(order, price=terms[0], quantity=terms[1]) if terms else None
        return fsm.apply_report(amended or order, parsed.report) or amended

    what = f" trade {trade.trade_id}" if trade else f" to {price} x {quantity}" if amended_to else ""
    return Move(f"event {execution}/{status} z={cumulative}{what}", change)


def algo_reply(status: str, actual_order: bool = False, reason: str = "") -> Move:
    """An answer of POST or GET /fapi/v1/algoOrder with `algoStatus`; `actual_order`: it names
    the order its trigger placed."""
    reply = {
        "algoId": ALGO_ID,
        "clientAlgoId": CLIENT_ID,
        "algoStatus": status,
        "actualOrderId": str(EXCHANGE_ID) if actual_order else "",
        "rejectReason": reason,
    }
    return _report_move(f"algo reply {status}", to_algo_report(reply))


def algo_event(status: str, actual_order: bool = False, reason: str = "") -> Move:
    """An ALGO_UPDATE event with status `X`; `actual_order`: it names the order its trigger placed (`ai`)."""
    o = {
        "caid": CLIENT_ID,
        "aid": ALGO_ID,
        "s": "BTCUSDT",
        "X": status,
        "ai": str(EXCHANGE_ID) if actual_order else "",
        "rm": reason,
    }
    parsed = parse_algo_event({"e": "ALGO_UPDATE", "E": 1_700_000_000_001, "o": o})
    return _report_move(f"algo event {status}{' ai' if actual_order else ''}", parsed.report)


def algo_canceled() -> Move:
    """The answer of DELETE /fapi/v1/algoOrder."""
    report = canceled_algo_report({"algoId": ALGO_ID, "clientAlgoId": CLIENT_ID, "code": "200", "msg": ""})
    return _report_move("algo cancel reply", report)


def local(target: OrderState, reason: str = "") -> Move:
    """A decision of the service's own (worker, reconciler): `fsm.transition` to `target`."""
    return Move(f"local {target}", lambda order: fsm.transition(order, target, reason=reason))


def claim() -> Move:
    """A worker takes the order to send it: NEW -> SUBMITTING."""
    return Move("claim", lambda order: fsm.transition(order, OrderState.SUBMITTING))


def cancel_request() -> Move:
    """A client's CancelOrder, as the gateway applies it (`request_cancel`)."""
    return Move("cancel request", request_cancel)


# --- one order's news ------------------------------------------------------------------------

# The order's two trades: 0.004 at 50000, then 0.006 at 49900 (average 49940, fees 0.20 USDT).
T1 = Trade(501, "0.004", "50000", "0.08")
T2 = Trade(502, "0.006", "49900", "0.12")
FIRST_TRADE = event("PARTIALLY_FILLED", trade=T1, cumulative="0.004", average="50000")
LAST_TRADE = event("FILLED", trade=T2, cumulative="0.010", average="49940")
ACKED = rest("NEW")  # the POST's answer: accepted, resting


@dataclass(frozen=True, slots=True)
class History:
    """Everything the exchange says in one order's life (plus, for some, a cancel asked at any
    moment), and how the order must end."""

    name: str
    start: Order
    news: tuple[Move, ...]
    state: OrderState
    filled: str

    def __repr__(self) -> str:
        return self.name


HISTORIES = [
    History(
        "filled in two trades, a cancel asked at any moment",
        limit_order(S.SUBMITTING),
        (
            ACKED,
            event("NEW"),
            FIRST_TRADE,
            LAST_TRADE,
            query("FILLED", "0.010", "49940", T1, T2),
            cancel_request(),
        ),
        S.FILLED,
        "0.010",
    ),
    History(
        "partially filled, then canceled on request",
        limit_order(S.SUBMITTING),
        (
            ACKED,
            FIRST_TRADE,
            cancel_request(),
            rest("CANCELED", "0.004", "50000"),
            event("CANCELED", cumulative="0.004", average="50000"),
        ),
        S.CANCELED,
        "0.004",
    ),
    History(
        "IOC partially filled, the rest expired",
        limit_order(S.SUBMITTING),
        (
            rest("EXPIRED", "0.004", "50000"),
            FIRST_TRADE,
            event("EXPIRED", cumulative="0.004", average="50000"),
        ),
        S.EXPIRED,
        "0.004",
    ),
    History("rejected", limit_order(S.SUBMITTING), (rest("REJECTED"), event("REJECTED")), S.REJECTED, "0"),
    History(
        "stop waits, triggers, its order fills; a cancel asked at any moment",
        stop_order(),
        (
            algo_reply("NEW"),
            algo_event("NEW"),
            algo_event("TRIGGERING"),
            algo_event("TRIGGERED", actual_order=True),
            algo_event("FINISHED", actual_order=True),
            event("NEW"),
            FIRST_TRADE,
            LAST_TRADE,
            query("FILLED", "0.010", "49940", T1, T2),
            cancel_request(),
        ),
        S.FILLED,
        "0.010",
    ),
    History(
        "stop canceled while it waits",
        stop_order(),
        (algo_reply("NEW"), algo_event("NEW"), cancel_request(), algo_event("CANCELED"), algo_canceled()),
        S.CANCELED,
        "0",
    ),
    History(
        "stop triggered, its order rejected",
        stop_order(),
        (algo_reply("NEW"), algo_event("TRIGGERING"), algo_event("REJECTED", reason="insufficient margin")),
        S.REJECTED,
        "0",
    ),
]
