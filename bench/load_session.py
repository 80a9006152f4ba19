"""The throughput bench's client: what to trade, and one gRPC session that places and times orders.

`order_quantities` asks the simulator for the smallest MARKET quantity per symbol. A `Session`
holds one OrderService stub (and the API key its calls send, when the gateway requires one);
`place` times CreateOrder, and `read_stream` (one StreamOrderUpdates reader for every symbol)
stamps per order the first update carrying the exchange's answer and the final one.
`latencies` and `stats` turn orders into milliseconds.

Every latency starts at the order's scheduled send time (`Order.scheduled`, fixed by an open-loop
schedule before anything is sent), not when the call actually went out: a client that falls
behind its schedule would otherwise hide its own queueing (coordinated omission). The gap
between the two is the client's lag, reported beside the latencies. Nothing is dropped from a
percentile: an order without the stamp within `LOST_AFTER_S` of its scheduled send (timed out,
never answered, or refused) counts as `LOST_AFTER_S` (the timeout), so a percentile that reads
10,000 ms means "at least the timeout".
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Any

import grpc
import httpx

from bench.report import percentile
from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc

LOST_AFTER_S = 10.0
TIMEOUT_MS = LOST_AFTER_S * 1000  # what an order without its stamp in time counts as in a percentile
# The event loop's timers wake up to 1 ms late (epoll waits in whole milliseconds, rounded up), which
# would put about half a millisecond of timer slack into every latency at low rates. So a send is
# aimed this much before its scheduled time; one that goes out early has its latencies taken from
# the actual send (`Order.origin`), so aiming early never shortens a latency.
SEND_EARLY_S = 0.0005
DRAIN_TAIL_S = 0.25  # after the last final update: trailing work (user-stream events) lands in the step
SETTLE_MAX_S = 20.0
NOTIONAL_FACTOR = Decimal("1.1")
ANSWERED = frozenset({pb.SUBMITTED, pb.PARTIALLY_FILLED, pb.FILLED, pb.CANCELED, pb.REJECTED, pb.EXPIRED})
FINAL = frozenset({pb.FILLED, pb.CANCELED, pb.REJECTED, pb.EXPIRED})


def ms(start: float, end: float | None) -> float | None:
    return None if end is None else (end - start) * 1000


def p50_p99(samples: Sequence[float]) -> tuple[float | None, float | None]:
    if not samples:
        return None, None
    return percentile(list(samples), 50), percentile(list(samples), 99)


# ---------------------------------------------------------------- what to trade


def order_quantities(base_url: str, symbols: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Per symbol: the smallest MARKET quantity meeting MIN_NOTIONAL (x1.1), and ccxt's symbol name."""
    with httpx.Client(base_url=base_url, timeout=5) as client:
        info = client.get("/fapi/v1/exchangeInfo").json()
        prices: dict[str, Decimal] = {}
        for path, key in (("/fapi/v1/ticker/price", "price"), ("/fapi/v1/premiumIndex", "markPrice")):
            reply = client.get(path)
            if reply.status_code == 200:
                for row in reply.json():
                    price = Decimal(row[key])
                    prices[row["symbol"]] = max(price, prices.get(row["symbol"], price))
    specs = {s["symbol"]: s for s in info["symbols"]}
    missing = [s for s in symbols if s not in specs]
    if missing:
        raise SystemExit(f"the simulator does not list {', '.join(missing)}; pick others with --symbols")
    quantities, ccxt_names = {}, {}
    for symbol in symbols:
        spec = specs[symbol]
        filters = {f["filterType"]: f for f in spec["filters"]}
        lots = [filters[k] for k in ("LOT_SIZE", "MARKET_LOT_SIZE") if k in filters]
        step = max(Decimal(lot["stepSize"]) for lot in lots)
        min_qty = max(Decimal(lot["minQty"]) for lot in lots)
        notional = Decimal(filters.get("MIN_NOTIONAL", {}).get("notional", "0"))
        if symbol in prices:
            needed = (notional * NOTIONAL_FACTOR / prices[symbol] / step).to_integral_value(
                ROUND_CEILING
            ) * step
        else:  # no price endpoint: the lot minimum with a generous factor
            needed = min_qty * 10
        quantity = max(min_qty, needed).quantize(step)
        quantities[symbol] = format(quantity, "f")
        ccxt_names[symbol] = (
            f"{spec.get('baseAsset', symbol[:-4])}/{spec.get('quoteAsset', 'USDT')}"
            f":{spec.get('marginAsset', 'USDT')}"
        )
    return quantities, ccxt_names


# ---------------------------------------------------------------- the client


async def wait_until(at: float) -> None:
    """Sleep until `at` (a perf_counter time), aimed SEND_EARLY_S early; return at once if past."""
    delay = at - SEND_EARLY_S - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


@dataclass
class Order:
    cid: str
    symbol: str
    request: pb.CreateOrderRequest
    scheduled: float | None = None  # the open-loop schedule's send time; None: sent when placed
    submit: float = 0.0  # when the call actually went out
    ack: float | None = None
    answer: float | None = None
    final: float | None = None
    fill: float | None = None  # every trade of a FILLED order recorded (ids, fees; from the user stream)
    state: int = 0
    error: str = ""
    detail: str = ""

    def settled(self) -> bool:
        """Refused, or final and, if FILLED, with every trade recorded."""
        if self.error:
            return True
        return self.final is not None and (self.state != pb.FILLED or self.fill is not None)

    def origin(self) -> float:
        """Where this order's latencies start: its scheduled send time, or the actual send if that
        was earlier (the sender aims SEND_EARLY_S early); unscheduled, the actual send."""
        if self.scheduled is None:
            return self.submit
        return min(self.scheduled, self.submit) if self.submit else self.scheduled

    def lag_ms(self) -> float:
        """How late the client sent it against its schedule, in ms (negative: early; 0 unscheduled)."""
        return 0.0 if self.scheduled is None else (self.submit - self.scheduled) * 1000

    def answered_in_time(self) -> bool:
        """The exchange's answer reached the stream within LOST_AFTER_S of the scheduled send."""
        return self.answer is not None and self.answer - self.origin() <= LOST_AFTER_S

    def summary(self) -> str:
        state = pb.OrderState.Name(pb.OrderState.ValueType(self.state)) if self.state else "no update"
        refused = f" refused {self.error} ({self.detail})" if self.error else ""
        return f"{self.cid} {self.symbol} {state}{refused}"


@dataclass
class Session:
    stub: order_pb2_grpc.OrderServiceAsyncStub
    symbols: list[str]
    quantities: dict[str, str]
    api_key: str = ""  # sent as gRPC metadata x-api-key on every call when set (a gateway with auth on)
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    orders: dict[str, Order] = field(default_factory=dict)
    sides: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seq: int = 0
    last_update: float = field(default_factory=time.perf_counter)
    resume_token: str = ""
    reconnects: int = 0

    def next_side(self, symbol: str) -> str:
        self.sides[symbol] += 1
        return "BUY" if self.sides[symbol] % 2 else "SELL"

    def new_order(self, symbol: str) -> Order:
        self.seq += 1
        cid = f"tp{self.tag}-{self.seq}"
        side = pb.BUY if self.next_side(symbol) == "BUY" else pb.SELL
        request = pb.CreateOrderRequest(
            symbol=symbol, side=side, type=pb.MARKET, quantity=self.quantities[symbol], client_order_id=cid
        )
        order = self.orders[cid] = Order(cid, symbol, request)
        return order

    def plan(self, n: int) -> list[Order]:
        return [self.new_order(self.symbols[i % len(self.symbols)]) for i in range(n)]

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The call metadata: the API key when there is one."""
        return (("x-api-key", self.api_key),) if self.api_key else ()

    async def read_stream(self) -> None:
        """Stamp answers and finals; on a dropped stream, resume after the last update seen."""
        while True:
            call = self.stub.StreamOrderUpdates(
                pb.StreamOrderUpdatesRequest(resume_token=self.resume_token), metadata=self.metadata
            )
            try:
                async for update in call:
                    now = time.perf_counter()
                    self.last_update = now
                    self.resume_token = update.resume_token
                    order = self.orders.get(update.order.client_order_id)
                    if order is None:
                        continue
                    state = update.order.state
                    if state in ANSWERED and order.answer is None:
                        order.answer = now
                    if state in FINAL and order.final is None:
                        order.final = now
                    if state == pb.FILLED and order.fill is None and _fills_complete(update.order):
                        order.fill = now
                    order.state = state
                reason = "ended by the server"
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.CANCELLED:
                    return
                reason = f"{exc.code().name}: {exc.details()}"
            self.reconnects += 1
            print(f"  update stream closed ({reason}); resuming after the last update", flush=True)
            await asyncio.sleep(0.05)

    async def place(self, order: Order) -> None:
        """Send `order` now; stamp the send (and, unscheduled, the schedule) and the answer or refusal."""
        order.submit = time.perf_counter()
        if order.scheduled is None:
            order.scheduled = order.submit
        try:
            await self.stub.CreateOrder(order.request, timeout=LOST_AFTER_S, metadata=self.metadata)
            order.ack = time.perf_counter()
        except grpc.aio.AioRpcError as exc:
            order.error = exc.code().name
            order.detail = (exc.details() or "")[:160]

    async def drain(self, orders: Sequence[Order], tail_s: float = DRAIN_TAIL_S) -> None:
        """Until every order is settled (refused, or final with its trades recorded), at most
        LOST_AFTER_S after the last submit."""
        while True:
            last_submit = max(o.submit for o in orders)
            if all(o.settled() for o in orders):
                break
            if time.perf_counter() > last_submit + LOST_AFTER_S:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(tail_s)

    async def settle(self, quiet_s: float = 1.0) -> None:
        """Until the stream has been quiet for `quiet_s` (a backlog left by a lost step is worked off)."""
        deadline = time.perf_counter() + SETTLE_MAX_S
        while time.perf_counter() < deadline and time.perf_counter() - self.last_update < quiet_s:
            await asyncio.sleep(0.1)


def _fills_complete(order: pb.Order) -> bool:
    """Whether `order`'s recorded trades add up to its filled quantity."""
    recorded = sum(Decimal(f.quantity) for f in order.fills)
    return bool(order.fills) and recorded == Decimal(order.filled_quantity)


def latencies(orders: Sequence[Order]) -> dict[str, list[float]]:
    """Per measure, one sample (ms from the scheduled send) for every order, none dropped.

    `ack` is CreateOrder's reply, `answer` the first update carrying the exchange's answer,
    `final` the final state, `fill` every trade of a FILLED order recorded. A stamp missing or
    later than LOST_AFTER_S (timed out, unanswered or refused) counts as TIMEOUT_MS. `fill` leaves
    out the orders that ended in another final state: they have no trades to record.
    """
    out: dict[str, list[float]] = {"ack": [], "answer": [], "final": [], "fill": []}
    for o in orders:
        origin = o.origin()
        for key, at in (("ack", o.ack), ("answer", o.answer), ("final", o.final), ("fill", o.fill)):
            if key == "fill" and o.final is not None and o.state != pb.FILLED:
                continue
            value = ms(origin, at)
            out[key].append(TIMEOUT_MS if value is None or value > TIMEOUT_MS else value)
    return out


def lag_stats(orders: Sequence[Order]) -> dict[str, float | None]:
    """The client's send lag (actual send minus scheduled send): p50, p99 and max, in ms."""
    lags = [o.lag_ms() for o in orders]
    p50, p99 = p50_p99(lags)
    return {"lag_p50_ms": p50, "lag_p99_ms": p99, "lag_max_ms": max(lags) if lags else None}


def stats(orders: Sequence[Order]) -> dict[str, Any]:
    """Counts (orders, refused, lost: no answer within LOST_AFTER_S of the schedule, not filled),
    the client's lag and p50/p99 of every measure in `latencies`."""
    lat = latencies(orders)
    refused = [o for o in orders if o.error]
    lost = [o for o in orders if not o.error and not o.answered_in_time()]
    out: dict[str, Any] = {
        "orders": len(orders),
        "refused": len(refused),
        "refused_codes": sorted({o.error for o in refused}),
        "lost": len(lost),
        "not_filled": sum(1 for o in orders if o.final is not None and o.state != pb.FILLED),
        "lost_orders": [o.summary() for o in lost[:20]],
        **lag_stats(orders),
    }
    for key, samples in lat.items():
        out[f"{key}_p50_ms"], out[f"{key}_p99_ms"] = p50_p99(samples)
    return out


def print_lost(label: str, orders: Sequence[Order]) -> None:
    lost = [o for o in orders if o.error or not o.answered_in_time()]
    if lost:
        print(f"    {label}: {len(lost)} refused or unanswered within {LOST_AFTER_S:.0f} s:", flush=True)
        for o in lost[:10]:
            print(f"      {o.summary()}", flush=True)
        if len(lost) > 10:
            print(f"      ... and {len(lost) - 10} more", flush=True)
