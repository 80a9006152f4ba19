"""Orders: validation codes, matching (fills, partial fills, IOC, FOK, GTX), responses, positions."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from sim_helpers import LIMIT, Sim, new_account


def with_(**changes: Any) -> dict[str, Any]:
    out = {**LIMIT, **changes}
    return {k: v for k, v in out.items() if v is not None}


@pytest.mark.parametrize(
    ("params", "code", "msg"),
    [
        (with_(symbol="NOPEUSDT"), -1121, "Invalid symbol."),
        (with_(side=None), -1102, "Mandatory parameter 'side' was not sent, was empty/null, or malformed."),
        (with_(side="UP"), -1117, "Invalid side."),
        (with_(type="ICEBERG"), -1116, "Invalid orderType."),
        (
            with_(type="STOP_MARKET"),
            -4120,
            "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead.",
        ),
        (
            with_(type="TAKE_PROFIT"),
            -4120,
            "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead.",
        ),
        (
            with_(timeInForce=None),
            -1102,
            "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed.",
        ),
        (
            with_(quantity=None),
            -1102,
            "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.",
        ),
        (with_(price=None), -1102, "Mandatory parameter 'price' was not sent, was empty/null, or malformed."),
        (with_(price="49000.123"), -1111, "Precision is over the maximum defined for this asset."),
        (with_(quantity="0.0101"), -1111, "Precision is over the maximum defined for this asset."),
        (with_(price="49000.05"), -4014, "Price not increased by tick size."),
        (with_(price="500"), -4013, "Price less than min price."),
        (with_(price="5000000"), -4002, "Price greater than max price."),
        (with_(quantity="0"), -4003, "Quantity less than zero."),
        (with_(quantity="1001", price="50000"), -4005, "Quantity greater than max quantity."),
        (with_(price="60000"), -4016, "Price is higher than mark price multiplier cap."),
        (with_(side="SELL", price="40000"), -4024, "Price is lower than mark price multiplier floor."),
        (
            with_(quantity="0.001"),
            -4164,
            "Order's notional must be no smaller than 100 (unless you choose reduce only)",
        ),
        (with_(newClientOrderId="x" * 37), -4015, "Client order id length should not be more than 36 chars"),
        (
            with_(newClientOrderId="bad id!"),
            -1100,
            "Illegal characters found in parameter 'newClientOrderId'; "
            "legal range is '^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.",
        ),
        (
            with_(quantity="abc"),
            -1100,
            "Illegal characters found in parameter 'quantity'; "
            "legal range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'.",
        ),
        (with_(positionSide="LONG"), -4061, "Order's position side does not match user's setting."),
        (
            with_(type="MARKET", timeInForce=None, price=None, quantity="121"),
            -4005,
            "Quantity greater than max quantity.",
        ),
        (
            with_(timeInForce="GTD", goodTillDate="1000"),
            -5040,
            "The goodTillDate timestamp must be greater than the current time plus 600 seconds and "
            "smaller than 253402300799000 (UTC 9999-12-31 23:59:59)",
        ),
        (with_(timeInForce="DAY"), -1115, "Invalid timeInForce."),
        (with_(quantity="100", price="50000"), -2019, "Margin is insufficient."),
        (with_(reduceOnly="true"), -2022, "ReduceOnly Order is rejected."),
    ],
)
async def test_rejections(sim: Sim, params: dict[str, Any], code: int, msg: str) -> None:
    params.setdefault("symbol", "BTCUSDT")
    r = await sim.order(**params)
    assert r.status_code == 400
    assert r.json() == {"code": code, "msg": msg}
    assert await sim.admin_get("orders") == []


async def test_precision_on_other_symbols(sim: Sim) -> None:
    r = await sim.order(
        symbol="BNBUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.015", price="600"
    )
    assert r.json()["code"] == -1111
    r = await sim.order(
        symbol="SOLUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.5", price="150"
    )
    assert r.json()["code"] == -1111
    await sim.set_price("XRPUSDT", "0.6")
    r = await sim.order(
        symbol="XRPUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.05", price="0.6"
    )
    assert r.json()["code"] == -1111


async def test_min_qty_and_step_errors_with_overridden_filters(make_sim: Any) -> None:
    sim = await make_sim(
        symbol_overrides={"BNBUSDT": {"quantity_precision": "3", "min_qty": "0.05", "step_size": "0.01"}}
    )
    base = {"symbol": "BNBUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "price": "600"}
    r = await sim.order(**base, quantity="0.020")
    assert r.status_code == 400
    assert r.json() == {"code": -4004, "msg": "Quantity less than min quantity."}
    r = await sim.order(**base, quantity="0.055")
    assert r.json() == {"code": -4023, "msg": "Qty not increased by step size."}
    r = await sim.order(**base, quantity="0.060")
    assert r.status_code == 200, r.text
    info = (await sim.http.get("/fapi/v1/exchangeInfo")).json()
    bnb = next(s for s in info["symbols"] if s["symbol"] == "BNBUSDT")
    assert bnb["quantityPrecision"] == 3
    assert bnb["filters"][1] == {
        "filterType": "LOT_SIZE",
        "minQty": "0.05",
        "maxQty": "100000",
        "stepSize": "0.01",
    }


def test_unknown_override_field_rejected() -> None:
    from usdm_simulator.symbols import build_specs

    with pytest.raises(ValueError, match="tick"):
        build_specs(["BTCUSDT"], {}, {"BTCUSDT": {"tick": "1"}})


async def test_price_on_market_order_not_required(sim: Sim) -> None:
    r = await sim.order(side="BUY", type="MARKET", quantity="0.010", price="50000")
    assert r.status_code == 400
    assert r.json() == {"code": -1106, "msg": "Parameter 'price' sent when not required."}


async def test_reduce_only_exempt_from_min_notional(sim: Sim) -> None:
    r = await sim.order(side="BUY", type="MARKET", quantity="0.010")
    assert r.status_code == 200
    r = await sim.order(
        side="SELL", type="MARKET", quantity="0.001", reduceOnly="true", newOrderRespType="RESULT"
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "FILLED"


async def test_max_num_orders_2025(make_sim: Any) -> None:
    sim = await make_sim(max_num_orders=2)
    for i in range(2):
        assert (await sim.order(**with_(price=str(49000 - i)))).status_code == 200
    r = await sim.order(**LIMIT)
    assert r.json() == {"code": -2025, "msg": "Reach max open order limit."}


async def test_ack_is_initial_state_and_result_is_final(sim: Sim) -> None:
    r = await sim.order(side="BUY", type="MARKET", quantity="0.010")
    ack = r.json()
    assert ack["status"] == "NEW" and ack["executedQty"] == "0.000" and ack["type"] == "MARKET"
    assert {"orderId", "clientOrderId", "cumQty", "cumQuote", "avgPrice", "updateTime", "origType"} <= set(
        ack
    )
    q = await sim.signed("GET", "/fapi/v1/order", symbol="BTCUSDT", orderId=ack["orderId"])
    assert q.json()["status"] == "FILLED" and "time" in q.json()
    r = await sim.order(side="BUY", type="MARKET", quantity="0.010", newOrderRespType="RESULT")
    res = r.json()
    assert res["status"] == "FILLED" and res["executedQty"] == "0.010" and Decimal(res["avgPrice"]) == 50000


async def test_limit_rests_then_fills_when_price_crosses(sim: Sim) -> None:
    r = await sim.order(**LIMIT, newClientOrderId="rest-1")
    assert r.json()["status"] == "NEW"
    await sim.set_price("BTCUSDT", "49500")
    assert (await sim.admin_get("orders", clientOrderId="rest-1"))[0]["status"] == "NEW"
    await sim.set_price("BTCUSDT", "48900")
    order = (await sim.admin_get("orders", clientOrderId="rest-1"))[0]
    assert order["status"] == "FILLED" and order["account"] == sim.account.key
    trades = (await sim.signed("GET", "/fapi/v1/userTrades", symbol="BTCUSDT")).json()
    assert len(trades) == 1 and trades[0]["maker"] is True and trades[0]["price"] == "49000.00"
    assert Decimal(trades[0]["commission"]) == Decimal("49000") * Decimal("0.010") * Decimal("0.0002")


async def test_partial_fills_with_limited_liquidity(sim: Sim) -> None:
    await sim.set_price("BTCUSDT", "50000", liquidity="0.004")
    await sim.order(**with_(newClientOrderId="part-1"))
    await sim.set_price("BTCUSDT", "48000")
    o = (await sim.admin_get("orders", clientOrderId="part-1"))[0]
    assert o["status"] == "PARTIALLY_FILLED" and o["executedQty"] == "0.004"
    await sim.set_price("BTCUSDT", "48100")
    await sim.set_price("BTCUSDT", "48000")
    o = (await sim.admin_get("orders", clientOrderId="part-1"))[0]
    assert o["status"] == "FILLED" and o["executedQty"] == "0.010"
    trades = (await sim.signed("GET", "/fapi/v1/userTrades", symbol="BTCUSDT")).json()
    assert [t["qty"] for t in trades] == ["0.004", "0.004", "0.002"]
    assert len({t["id"] for t in trades}) == 3


async def test_market_partial_fill_expires_remainder(sim: Sim) -> None:
    await sim.set_price("BTCUSDT", "50000", liquidity="0.004")
    r = await sim.order(side="BUY", type="MARKET", quantity="0.010", newOrderRespType="RESULT")
    assert r.json()["status"] == "EXPIRED" and r.json()["executedQty"] == "0.004"


async def test_ioc_remainder_expired(sim: Sim) -> None:
    await sim.set_price("BTCUSDT", "50000", liquidity="0.003")
    r = await sim.order(**with_(timeInForce="IOC", price="50100", newOrderRespType="RESULT"))
    body = r.json()
    assert body["status"] == "EXPIRED" and body["executedQty"] == "0.003"
    r = await sim.order(**with_(timeInForce="IOC", price="49000", newOrderRespType="RESULT"))
    assert r.json()["status"] == "EXPIRED" and r.json()["executedQty"] == "0.000"


async def test_fok_rejected_when_not_fillable(sim: Sim) -> None:
    msg = (
        "Due to the order could not be filled immediately, the FOK order has been rejected. "
        "The order will not be recorded in the order history"
    )
    r = await sim.order(**with_(timeInForce="FOK", newClientOrderId="fok-1"))
    assert r.json() == {"code": -5021, "msg": msg}
    await sim.set_price("BTCUSDT", "50000", liquidity="0.005")
    r = await sim.order(**with_(timeInForce="FOK", price="50100"))
    assert r.json()["code"] == -5021
    await sim.set_price("BTCUSDT", "50000", liquidity=None)
    r = await sim.order(**with_(timeInForce="FOK", price="50100", newOrderRespType="RESULT"))
    assert r.json()["status"] == "FILLED"
    q = await sim.signed("GET", "/fapi/v1/order", symbol="BTCUSDT", origClientOrderId="fok-1")
    assert q.json()["code"] == -2013


async def test_gtx_rejected_when_crossing_and_rests_otherwise(sim: Sim) -> None:
    r = await sim.order(**with_(timeInForce="GTX", price="50100", newClientOrderId="gtx-1"))
    assert r.status_code == 400
    assert r.json() == {
        "code": -5022,
        "msg": "Due to the order could not be executed as maker, the Post Only order will be rejected. "
        "The order will not be recorded in the order history",
    }
    assert await sim.admin_get("orders", clientOrderId="gtx-1") == []
    r = await sim.order(**with_(timeInForce="GTX", price="49900"))
    assert r.json()["status"] == "NEW"


async def test_duplicate_client_id_among_open_orders(sim: Sim) -> None:
    assert (await sim.order(**with_(newClientOrderId="dup-1"))).status_code == 200
    r = await sim.order(**with_(newClientOrderId="dup-1"))
    assert r.json() == {"code": -4116, "msg": "ClientOrderId is duplicated."}
    r = await sim.order(account=sim.accounts[1], **with_(newClientOrderId="dup-1"))
    assert r.status_code == 200
    assert len(await sim.admin_get("orders", clientOrderId="dup-1")) == 2


async def test_query_and_cancel(sim: Sim) -> None:
    r = await sim.order(**with_(newClientOrderId="qc-1"))
    oid = r.json()["orderId"]
    q = await sim.signed("GET", "/fapi/v1/order", symbol="BTCUSDT", origClientOrderId="qc-1")
    assert q.json()["orderId"] == oid and q.json()["status"] == "NEW"
    c = await sim.signed("DELETE", "/fapi/v1/order", symbol="BTCUSDT", orderId=oid)
    assert c.json()["status"] == "CANCELED"
    c = await sim.signed("DELETE", "/fapi/v1/order", symbol="BTCUSDT", orderId=oid)
    assert c.status_code == 400 and c.json() == {"code": -2011, "msg": "Unknown order sent."}
    c = await sim.signed("DELETE", "/fapi/v1/order", symbol="BTCUSDT", orderId=123)
    assert c.json() == {"code": -2011, "msg": "Unknown order sent."}
    q = await sim.signed("GET", "/fapi/v1/order", symbol="BTCUSDT", orderId=123)
    assert q.json() == {"code": -2013, "msg": "Order does not exist."}
    q = await sim.signed("GET", "/fapi/v1/order", symbol="BTCUSDT")
    assert q.json()["code"] == -1102
    # Another account cannot see the order.
    q = await sim.signed("GET", "/fapi/v1/order", account=sim.accounts[1], symbol="BTCUSDT", orderId=oid)
    assert q.json()["code"] == -2013
    # A cancelled client id can be reused.
    assert (await sim.order(**with_(newClientOrderId="qc-1"))).status_code == 200


async def test_positions_and_realised_pnl(sim: Sim) -> None:
    await sim.order(side="BUY", type="MARKET", quantity="0.010")
    await sim.set_price("BTCUSDT", "51000")
    risk = (await sim.signed("GET", "/fapi/v2/positionRisk", symbol="BTCUSDT")).json()
    assert risk[0]["positionAmt"] == "0.010" and Decimal(risk[0]["unRealizedProfit"]) == 10
    await sim.order(side="SELL", type="MARKET", quantity="0.010")
    trades = (await sim.signed("GET", "/fapi/v1/userTrades", symbol="BTCUSDT")).json()
    assert Decimal(trades[-1]["realizedPnl"]) == 10
    acct = (await sim.signed("GET", "/fapi/v2/account")).json()
    fees = Decimal("500") * Decimal("0.0005") + Decimal("510") * Decimal("0.0005")
    assert Decimal(acct["totalWalletBalance"]) == Decimal(100000) + 10 - fees
    other = new_account()
    assert other.key not in {a["key"] for a in (await sim.admin_get("state"))["accounts"]}


async def test_reduce_only_never_flips_the_position(sim: Sim) -> None:
    await sim.order(side="BUY", type="MARKET", quantity="0.010")
    r = await sim.order(
        side="SELL",
        type="LIMIT",
        timeInForce="GTC",
        quantity="0.020",
        price="50500",
        reduceOnly="true",
        newClientOrderId="ro-1",
    )
    assert r.status_code == 200, r.text
    await sim.set_price("BTCUSDT", "50600")
    order = (await sim.admin_get("orders", clientOrderId="ro-1"))[0]
    assert order["executedQty"] == "0.010"
    risk = (await sim.signed("GET", "/fapi/v2/positionRisk", symbol="BTCUSDT")).json()
    assert risk[0]["positionAmt"] == "0.000" and order["status"] == "EXPIRED"
