"""The multi-host test's clients, run on a host of their own: `python -m tests.cluster.client CONFIG`.

CONFIG is a JSON file (`ClientConfig`). From `start_at` (wall clock, so the test can time its
faults against it) the clients send `orders` orders at `rate` per second, spread over both
gateways (tests/cluster/gateways.py): MARKET and resting LIMIT orders over the symbols, a share
of the LIMIT ones canceled a moment later, each CreateOrder retried with the same client id
after UNAVAILABLE. Two update streams run throughout, A preferring the first gateway, B the
second; each resumes with its token on whichever gateway is up. Once submission is over and
the test says its faults are over (the file `faults_done` exists) the clients let every order
settle and check the service against the simulator's record (tests/chaos/verify.py); they then
read the JetStream stream from its start, and write `result` (JSON): the verdict, every
CreateOrder attempt with wall-clock times, and the two counts only a multi-host run can break:

* versions repeated: an (order, version) a stream client or the JetStream stream holds twice,
  or holds in a different state from another source, or from the order's record now;
* acknowledged then missing: an order CreateOrder answered OK for that the service no longer
  has (GetOrder NOT_FOUND), or now has under another id.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import secrets
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import httpx
import nats
import nats.js.errors
import orjson
from nats.js.api import ConsumerConfig, DeliverPolicy

from order_execution.listener.events import UPDATES_SUBJECT
from order_execution.proto import order_pb2 as pb
from tests.chaos.quiesce import check_against_exchange, sweep_and_freeze, wait_settled
from tests.chaos.streams import StreamRecorder
from tests.chaos.verify import OrderView
from tests.chaos.workload import (
    Clock,
    PlannedOrder,
    PriceBook,
    Submitter,
    make_plan,
    overtaken_by_market,
    retry_rpc,
    sizing_for,
)
from tests.cluster.gateways import CHANNEL_OPTIONS, Gateways, as_stub

if TYPE_CHECKING:
    from tests.cluster.gateways import Stub

SUBMIT_LANES = 8
MARKET_SHARE, CANCEL_SHARE, CANCEL_DELAY_S = 0.4, 0.25, (0.2, 3.0)
CONDITIONAL_SHARE = 0.1  # of the orders that are not MARKET: STOP_MARKETs
CREATE_TRIES = 120  # ~50 s of retries: a partition stops writes for its length (10 s) and more
CONSISTENT_TIMEOUT_S = 30.0
_STREAM_SETTLE_S = 30.0  # how long the JetStream read waits out a stream with no leader yet


@dataclass(frozen=True)
class ClientConfig:
    gateways: list[str]
    gateway_names: list[str]
    api_key: str
    exchange: str  # the simulator's base URL (its admin API)
    nats_servers: list[str]
    nats_user: str
    nats_password: str
    nats_stream: str
    symbols: list[str]
    orders: int
    rate: float
    seed: int
    start_at: float  # wall clock
    faults_done: str  # a path: exists once the test's faults are over
    faults_timeout_s: float
    settle_timeout_s: float
    result: str  # a path


async def jetstream_versions(config: ClientConfig, order_ids: set[str]) -> list[tuple[str, int, str]]:
    """Every order update of ours in the JetStream stream, from its start: (order id, version, state)."""

    async def unreachable(exc: Exception) -> None:  # host a's node is gone for good: not news
        return None

    client = await nats.connect(
        servers=config.nats_servers,
        user=config.nats_user,
        password=config.nats_password,
        connect_timeout=2,
        error_cb=unreachable,
    )
    found: list[tuple[str, int, str]] = []
    try:
        js = client.jetstream(timeout=5)
        info = await js.stream_info(config.nats_stream)
        subscription = await js.pull_subscribe(
            f"{UPDATES_SUBJECT}.>",
            stream=config.nats_stream,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, inactive_threshold=60),
        )
        done = info.state.messages == 0
        unavailable_until = time.monotonic() + _STREAM_SETTLE_S
        while not done:
            try:
                batch = await subscription.fetch(500, timeout=5)
            except nats.errors.TimeoutError:
                break
            except nats.js.errors.ServiceUnavailableError:
                # The stream's replicas may still be electing a leader after the chaos: the
                # reader waits, as any subscriber would, within a bound.
                if time.monotonic() > unavailable_until:
                    raise
                await asyncio.sleep(0.5)
                continue
            for message in batch:
                order = orjson.loads(message.data)["order"]
                if order["order_id"] in order_ids:
                    found.append((order["order_id"], int(order["version"]), str(order["state"])))
                await message.ack()
                done = message.metadata.num_pending == 0
    finally:
        await client.close()
    return found


def repeated_versions(
    streams: dict[str, list[tuple[str, int, str]]], final: dict[str, OrderView]
) -> list[str]:
    """(order, version) pairs shown twice by one source, or in different states by two (see module doc)."""
    problems: list[str] = []
    states: dict[tuple[str, int], set[str]] = defaultdict(set)
    for name, events in streams.items():
        for (order_id, version), times in Counter((o, v) for o, v, _ in events).items():
            if times > 1:
                problems.append(f"{name}: order {order_id} version {version} shown {times} times")
        for order_id, version, state in events:
            states[(order_id, version)].add(state)
    for view in final.values():
        states[(view.order_id, view.version)].add(view.state)
    for (order_id, version), seen in sorted(states.items()):
        if len(seen) > 1:
            problems.append(f"order {order_id} version {version} shown as {sorted(seen)}")
    return problems


async def cancel_waiting_stops(stub: Stub, plan: list[PlannedOrder], clock: Clock) -> None:
    """Cancel the stop orders still waiting for their trigger (an order already final answers
    FAILED_PRECONDITION), so that every order ends final before the check."""
    stops = [item for item in plan if item.conditional and item.order_id is not None]
    canceled = 0
    for item in stops:
        assert item.order_id is not None
        request = pb.CancelOrderRequest(order_id=item.order_id, symbol=item.symbol)
        try:
            await retry_rpc(functools.partial(stub.CancelOrder, request, timeout=5))
            canceled += 1
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
    clock.log("quiesce", f"{len(stops)} stop orders: {canceled} still waiting canceled, the rest final")


async def run(config: ClientConfig) -> dict[str, object]:
    clock = Clock()
    wall_at_zero = time.time() - clock()
    rng = random.Random(config.seed)
    prefix = f"mh-{secrets.token_hex(3)}-"
    plan = make_plan(
        config.orders,
        config.symbols,
        rng,
        prefix,
        MARKET_SHARE,
        CANCEL_SHARE,
        CANCEL_DELAY_S,
        CONDITIONAL_SHARE,
    )
    sizing = {s: sizing_for(s) for s in config.symbols}
    channels = [grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) for target in config.gateways]
    background: list[asyncio.Task[None]] = []
    try:
        async with httpx.AsyncClient(base_url=config.exchange, timeout=10) as admin:
            gateways = Gateways.over(channels, config.gateway_names, config.api_key, clock)
            prices = PriceBook(admin)
            await prices.refresh()
            streams = [
                StreamRecorder(name, as_stub(gateways.preferring(index)), clock)
                for index, name in enumerate(("A", "B"))
            ]
            background += [asyncio.create_task(prices.run())]
            background += [asyncio.create_task(stream.run()) for stream in streams]
            await asyncio.sleep(max(1.0, config.start_at - time.time()))
            stub = as_stub(gateways)
            submitter = Submitter(stub, prices, sizing, config.rate, CREATE_TRIES, clock)
            clock.log(
                "submit", f"{config.orders} orders at {config.rate:g}/s over both gateways; prefix {prefix}"
            )
            await submitter.run(plan, SUBMIT_LANES)
            clock.log("submit", f"done: {submitter.accepted} accepted, {submitter.cancels_sent} cancels")
            deadline = time.monotonic() + config.faults_timeout_s
            while not Path(config.faults_done).exists() and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            await cancel_waiting_stops(stub, plan, clock)
            await sweep_and_freeze(admin, clock, config.symbols)
            await wait_settled(stub, plan, prefix, clock, config.settle_timeout_s)
            verdict, views = await check_against_exchange(
                stub,
                admin,
                plan,
                prefix,
                streams,
                clock,
                CONSISTENT_TIMEOUT_S,
            )
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        for channel in channels:
            await channel.close(None)

    final = {cid: view for cid, view in views.items() if view is not None}
    ours = {view.order_id for view in final.values()}
    nats_events = await jetstream_versions(config, ours)
    sources = {
        f"stream {s.name}": [(e.order_id, e.version, e.state) for e in s.events if e.order_id in ours]
        for s in streams
    }
    sources["JetStream"] = nats_events
    missing = [
        f"{item.client_order_id}: acknowledged as {item.order_id}, now "
        + ("not found" if final.get(item.client_order_id) is None else final[item.client_order_id].order_id)
        for item in plan
        if item.order_id is not None
        and (final.get(item.client_order_id) is None or final[item.client_order_id].order_id != item.order_id)
    ]
    return {
        "prefix": prefix,
        "lost": verdict.lost,
        "duplicated": verdict.duplicated,
        "mismatched": verdict.mismatched,
        "verdict_line": verdict.line(),
        "details": verdict.details(),
        "versions_repeated": repeated_versions(sources, final),
        "acknowledged_then_missing": missing,
        "accepted": submitter.accepted,
        "planned": len(plan),
        "never_accepted": [
            f"{i.client_order_id}: {i.create_error}"
            for i in plan
            if i.order_id is None and not overtaken_by_market(i, views)
        ],
        "overtaken_by_market": [i.client_order_id for i in plan if overtaken_by_market(i, views)],
        "retried_creates": submitter.retried_creates,
        "gateway_failovers": gateways.failovers,
        "stream_updates": {name: len(events) for name, events in sources.items()},
        "stream_drops": {s.name: s.drops for s in streams},
        "calls": [
            {
                **asdict(call),
                "started_wall": wall_at_zero + call.started_s,
                "ended_wall": wall_at_zero + call.ended_s,
            }
            for call in submitter.calls
        ],
    }


def main() -> int:
    config = ClientConfig(**json.loads(Path(sys.argv[1]).read_text()))
    result = asyncio.run(run(config))
    Path(config.result).write_text(json.dumps(result, indent=1))
    print(f"clients: {result['verdict_line']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
