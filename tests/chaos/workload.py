"""The chaos test's clients: the order plan, the paced submitters and cancels, reading orders back.

Orders are sized from the simulator's contract specs (step size, min notional with a
margin) and priced from the current reference price, on the tick, so none is refused for
its shape. Each has its own client_order_id, so a CreateOrder retried after UNAVAILABLE
(Redis restart, the gateway killed and restarted) is idempotent: a retry of an order the
dead gateway had already stored gets that order back (`duplicate` in the reply).

An order may name the exchange account it trades on (`CreateOrderRequest.account`; the chaos
test spreads its orders over two, drawn from the seeded RNG). Cancels name only the order id,
which identifies its account; the reads (ListOrders, GetOrder) cover every account.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import grpc
import httpx
from usdm_simulator.symbols import KNOWN_SYMBOLS

from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc
from tests.chaos.verify import FillView, OrderView, dec

if TYPE_CHECKING:  # the async stub exists only in the type stubs
    Stub = order_pb2_grpc.OrderServiceAsyncStub
T = TypeVar("T")
RETRIABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
LONG_RETRY_TRIES = 20  # a CreateOrder still failing after this many tries (~9 s) is logged


class Clock:
    """Seconds since the test started, for log lines."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() - self.t0

    def log(self, what: str, message: str) -> None:
        print(f"[{self():7.2f}s] {what:<8} {message}", flush=True)


# ---------------------------------------------------------------------- sizing
@dataclass(frozen=True)
class Sizing:
    symbol: str
    tick: Decimal
    step: Decimal
    base_qty: Decimal  # smallest size with notional >= 1.5 x min notional at the initial price

    @property
    def liquidity(self) -> Decimal:
        """What one match event may fill: two base sizes, so 3-size orders fill in parts."""
        return self.base_qty * 2


def sizing_for(symbol: str) -> Sizing:
    spec = KNOWN_SYMBOLS[symbol]
    raw = spec.min_notional * Decimal("1.5") / spec.initial_price
    steps = (raw / spec.step_size).to_integral_value(ROUND_CEILING)
    base = max(steps * spec.step_size, spec.min_qty)
    return Sizing(symbol, spec.tick_size, spec.step_size, base)


def on_tick(price: Decimal, tick: Decimal) -> Decimal:
    return (price / tick).to_integral_value(ROUND_HALF_EVEN) * tick


def plain(value: Decimal) -> str:
    return format(value.normalize(), "f") if value == value.to_integral_value() else format(value, "f")


# ---------------------------------------------------------------------- the plan
@dataclass
class PlannedOrder:
    index: int
    client_order_id: str
    symbol: str
    side: pb.OrderSide.ValueType
    market: bool
    size: int  # multiples of the symbol's base quantity
    offset: Decimal  # LIMIT price = reference x (1 + offset)
    cancel_after_s: float | None
    conditional: bool = False  # a STOP_MARKET, its trigger `offset` away on the side that stops
    account: str = ""  # the exchange account CreateOrder names; empty: the client's default
    # filled in while running
    order_id: str | None = None
    create_attempts: int = 0
    create_error: str = ""
    cancel_outcome: str = ""


def make_plan(
    count: int,
    symbols: list[str],
    rng: random.Random,
    prefix: str,
    market_share: float,
    cancel_share: float,
    cancel_delay_s: tuple[float, float],
    conditional_share: float = 0.0,
    accounts: Sequence[str] = (),
) -> list[PlannedOrder]:
    """`count` orders over `symbols` in turn, drawn from `rng` (so a seed replays the plan).

    With `accounts`, each order is created on one of them, drawn from `rng`; without, every
    order names no account (the client's default) and `rng` draws exactly what it did
    before accounts existed.
    """
    plan: list[PlannedOrder] = []
    for index in range(count):
        side = pb.BUY if rng.random() < 0.5 else pb.SELL
        market = rng.random() < market_share
        conditional = bool(conditional_share) and not market and rng.random() < conditional_share
        cancel, size = None, 1
        if conditional:
            # A stop 0.1-0.4 % away, above the market for a BUY: the walk or the sweep triggers most.
            away = Decimal(str(round(rng.uniform(0.001, 0.004), 5)))
            offset = away if side == pb.BUY else -away
        else:
            # Mostly passive (rests, fills when the walk crosses it), a few crossing at once.
            away = Decimal(str(round(rng.uniform(-0.0008, 0.005), 5)))
            offset = -away if side == pb.BUY else away
            if not market and rng.random() < cancel_share:
                cancel = rng.uniform(*cancel_delay_s)
            size = rng.choice((1, 1, 2, 3))
        plan.append(
            PlannedOrder(
                index=index,
                client_order_id=f"{prefix}{index:05d}",
                symbol=symbols[index % len(symbols)],
                side=side,
                market=market,
                size=size,
                offset=offset,
                cancel_after_s=cancel,
                conditional=conditional,
                account=rng.choice(accounts) if accounts else "",
            )
        )
    return plan


class PriceBook:
    """The simulator's reference prices, refreshed in the background."""

    def __init__(self, admin: httpx.AsyncClient) -> None:
        self._admin = admin
        self.prices: dict[str, Decimal] = {}

    async def refresh(self) -> None:
        reply = await self._admin.get("/admin/prices")
        reply.raise_for_status()
        self.prices = {s: Decimal(v["price"]) for s, v in reply.json().items()}

    async def run(self, period_s: float = 0.3) -> None:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                await self.refresh()
            await asyncio.sleep(period_s)


def build_request(item: PlannedOrder, sizing: Sizing, reference: Decimal) -> pb.CreateOrderRequest:
    quantity = plain(sizing.base_qty * item.size)
    if item.conditional:
        return pb.CreateOrderRequest(
            symbol=item.symbol,
            side=item.side,
            type=pb.STOP_MARKET,
            quantity=quantity,
            trigger_price=plain(on_tick(reference * (1 + item.offset), sizing.tick)),
            client_order_id=item.client_order_id,
            account=item.account,
        )
    if item.market:
        return pb.CreateOrderRequest(
            symbol=item.symbol,
            side=item.side,
            type=pb.MARKET,
            quantity=quantity,
            client_order_id=item.client_order_id,
            account=item.account,
        )
    price = on_tick(reference * (1 + item.offset), sizing.tick)
    return pb.CreateOrderRequest(
        symbol=item.symbol,
        side=item.side,
        type=pb.LIMIT,
        quantity=quantity,
        price=plain(price),
        time_in_force=pb.GTC,
        client_order_id=item.client_order_id,
        account=item.account,
    )


# ---------------------------------------------------------------------- submitting
@dataclass(frozen=True)
class CreateCall:
    """One CreateOrder attempt: when it started and ended (test clock, s) and how it ended."""

    client_order_id: str
    started_s: float
    ended_s: float
    outcome: str  # "OK", or the gRPC status code's name
    duplicate: bool = False  # OK, and the order had already been stored
    detail: str = ""  # the error's details


@dataclass
class Submitter:
    stub: Stub
    prices: PriceBook
    sizing: dict[str, Sizing]
    rate_per_s: float
    create_tries: int
    clock: Clock
    on_accepted: Callable[[int], None] = lambda n: None
    accepted: int = 0
    retried_creates: int = 0
    cancels_sent: int = 0
    creates_in_flight: int = 0  # CreateOrder calls started and not yet answered
    calls: list[CreateCall] = field(default_factory=list)  # every CreateOrder attempt, in end order
    cancel_tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _next_slot: float = 0.0

    async def _pace(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        slot = max(self._next_slot, now)
        self._next_slot = slot + 1.0 / self.rate_per_s
        await asyncio.sleep(slot - now)

    async def run(self, plan: list[PlannedOrder], concurrency: int) -> None:
        queue: asyncio.Queue[PlannedOrder] = asyncio.Queue()
        for item in plan:
            queue.put_nowait(item)

        async def lane() -> None:
            while True:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await self._pace()
                await self.create(item)

        await asyncio.gather(*(lane() for _ in range(concurrency)))
        if self.cancel_tasks:
            await asyncio.gather(*self.cancel_tasks)

    async def create(self, item: PlannedOrder) -> None:
        """CreateOrder `item`, retrying on a retriable status with the same request (same client id)."""
        request = build_request(item, self.sizing[item.symbol], self.prices.prices[item.symbol])
        for attempt in range(1, self.create_tries + 1):
            item.create_attempts = attempt
            answer = await self._create_once(item, request)
            if isinstance(answer, grpc.aio.AioRpcError):
                item.create_error = f"{answer.code().name}: {answer.details()}"
                if answer.code() in RETRIABLE:
                    if attempt == 1:
                        self.retried_creates += 1
                    if attempt == LONG_RETRY_TRIES:  # say why, once: a long stall is worth a look
                        why = f"still failing after {attempt} tries: {item.create_error}"
                        self.clock.log("create", f"{item.client_order_id} {why}")
                    await asyncio.sleep(min(0.1 * attempt, 0.5))
                    continue
                self.clock.log("create", f"{item.client_order_id} refused: {item.create_error}")
                return
            item.order_id = answer.order_id
            item.create_error = ""
            self.accepted += 1
            self.on_accepted(self.accepted)
            if item.cancel_after_s is not None:
                task = asyncio.create_task(self.cancel_later(item, item.cancel_after_s))
                self.cancel_tasks.add(task)
                task.add_done_callback(self.cancel_tasks.discard)
            return
        self.clock.log("create", f"{item.client_order_id} gave up after {attempt} tries: {item.create_error}")

    async def _create_once(
        self, item: PlannedOrder, request: pb.CreateOrderRequest
    ) -> pb.CreateOrderResponse | grpc.aio.AioRpcError:
        """One CreateOrder call, counted in `creates_in_flight` while it runs and logged in `calls`."""
        started = self.clock()
        self.creates_in_flight += 1
        try:
            reply = await self.stub.CreateOrder(request, timeout=5)
        except grpc.aio.AioRpcError as exc:
            self.calls.append(
                CreateCall(
                    item.client_order_id, started, self.clock(), exc.code().name, detail=exc.details() or ""
                )
            )
            return exc
        finally:
            self.creates_in_flight -= 1
        self.calls.append(CreateCall(item.client_order_id, started, self.clock(), "OK", reply.duplicate))
        return reply

    def write_calls(self, path: Path) -> None:
        """Write every CreateOrder attempt to `path`, one a line, tab-separated (for a post-mortem):
        client order id, started and ended (s), outcome, duplicate, error details."""
        with path.open("w") as out:
            out.write("client_order_id\tstarted_s\tended_s\toutcome\tduplicate\tdetail\n")
            for c in self.calls:
                fields = (c.client_order_id, f"{c.started_s:.3f}", f"{c.ended_s:.3f}", c.outcome, c.duplicate)
                out.write("\t".join(map(str, fields)) + "\t" + c.detail.replace("\n", " ") + "\n")

    async def cancel_later(self, item: PlannedOrder, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        assert item.order_id is not None
        request = pb.CancelOrderRequest(order_id=item.order_id, symbol=item.symbol)
        self.cancels_sent += 1
        for attempt in range(1, self.create_tries + 1):
            try:
                reply = await self.stub.CancelOrder(request, timeout=5)
            except grpc.aio.AioRpcError as exc:
                item.cancel_outcome = exc.code().name
                if exc.code() in RETRIABLE:
                    await asyncio.sleep(min(0.1 * attempt, 0.5))
                    continue
                if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:  # already final: fine
                    self.clock.log("cancel", f"{item.client_order_id}: {exc.code().name} {exc.details()}")
                return
            item.cancel_outcome = pb.OrderState.Name(reply.state)
            return


def overtaken_by_market(item: PlannedOrder, views: Mapping[str, OrderView | None]) -> bool:
    """A create retried so long (a 30 s circuit breaker, say) that the market moved past the
    exchange's PERCENT_PRICE band around its price, refused on that retry, and stored nowhere.

    The request keeps its first price on every retry (an idempotent retry must), so after a
    long enough stall the refusal is right. One the service holds is not this case: its
    retry must have answered with the stored order (and the checker looks at it anyway).
    """
    return (
        item.order_id is None
        and item.create_attempts > 1
        and item.create_error.startswith("FAILED_PRECONDITION")
        and "PERCENT_PRICE" in item.create_error
        and views.get(item.client_order_id) is None
    )


# ---------------------------------------------------------------------- reading back
def order_view(order: pb.Order) -> OrderView:
    return OrderView(
        order_id=order.order_id,
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        state=pb.OrderState.Name(order.state),
        filled=dec(order.filled_quantity),
        fee=dec(order.fee),
        version=order.version,
        fills=tuple(FillView(f.trade_id, dec(f.quantity), dec(f.fee)) for f in order.fills),
        account=order.account,
    )


async def retry_rpc(call: Callable[[], Awaitable[T]], tries: int = 40) -> T:
    """Run a read RPC, retrying while the service is briefly unavailable."""
    for attempt in range(1, tries + 1):
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in RETRIABLE or attempt == tries:
                raise
            await asyncio.sleep(0.25)
    raise AssertionError("unreachable")


async def list_all(stub: Stub, prefix: str) -> dict[str, OrderView]:
    """Every order of ours the service lists (ListOrders, paged), by client order id."""
    found: dict[str, OrderView] = {}
    token = ""
    while True:
        request = pb.ListOrdersRequest(limit=500, page_token=token)
        page = await retry_rpc(functools.partial(stub.ListOrders, request, timeout=10))
        for order in page.orders:
            if order.client_order_id.startswith(prefix):
                found[order.client_order_id] = order_view(order)
        token = page.next_page_token
        if not token:
            return found


async def get_order(stub: Stub, order_id: str) -> OrderView | None:
    """GetOrder, or None for NOT_FOUND."""
    try:
        reply = await retry_rpc(lambda: stub.GetOrder(pb.GetOrderRequest(order_id=order_id), timeout=10))
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise
    return order_view(reply.order)


async def snapshot(
    stub: Stub, plan: list[PlannedOrder], prefix: str, *, every_get: bool, concurrency: int = 16
) -> dict[str, OrderView | None]:
    """The service's record of every planned order, by client order id (None: not found).

    Orders CreateOrder never acknowledged are looked for in ListOrders. Acknowledged ones
    come from GetOrder when `every_get` (the final check), otherwise from the listing,
    with GetOrder only for those the listing lacks.
    """
    listed = await list_all(stub, prefix)
    result: dict[str, OrderView | None] = {}
    to_get: list[PlannedOrder] = []
    for item in plan:
        if item.order_id is None or (not every_get and item.client_order_id in listed):
            result[item.client_order_id] = listed.get(item.client_order_id)
        else:
            to_get.append(item)
    gate = asyncio.Semaphore(concurrency)

    async def fetch(item: PlannedOrder) -> None:
        assert item.order_id is not None
        async with gate:
            result[item.client_order_id] = await get_order(stub, item.order_id)

    await asyncio.gather(*(fetch(item) for item in to_get))
    return result
