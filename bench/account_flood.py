"""Two accounts, one flooded: does the other account's order still go out at once?

Account A is sent orders well beyond Binance's ORDERS limits (300 per 10 s, 1,200 per
minute) while account B sends 10 orders/s. A's orders beyond its budget wait for it (or are
refused at the gateway when they could not go out within `worker.max_order_age_ms`); B's
must not wait behind them. The figure is B's submit -> sent: from the time the client was
scheduled to send CreateOrder (open loop: a late client does not hide its own delay) to the
time the simulator received the POST /fapi/v1/order (its request journal), with A idle and
with A flooded, in the same run.

With one queue shared by both accounts B's orders would sit behind A's backlog, seconds of
it; with a queue per account and each account's own worker slots they go straight out.

    python bench/account_flood.py [--runs 3] [--seconds 10] [--flood-rate 60]

Prints the table (median and p99 of the runs), writes bench/results/account_flood.json and .png.
The integration test tests/integration/test_account_flood.py runs one round of the same phases.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: `bench` importable

from bench.load_session import order_quantities, p50_p99
from bench.redis_db import BENCH_REDIS_DB
from bench.report import report
from order_execution.launcher.stack import local_stack
from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc

ORDER_PATH = "/fapi/v1/order"
FLOODED, QUIET = "acct-2", "default"  # the two accounts of a `local_stack(accounts=2)`
# Our own token bucket well above what the accounts send, so what binds account A is Binance's
# ORDERS windows; A's orders may wait up to 10 s for them before they expire unsent.
FLOOD_STACK_ENV = {
    "ORDER_EXECUTION__RATE_LIMIT__REQUESTS_PER_SECOND": "200",
    "ORDER_EXECUTION__RATE_LIMIT__BURST": "400",
    "ORDER_EXECUTION__WORKER__MAX_ORDER_AGE_MS": "10000",
}
Metadata = tuple[tuple[str, str | bytes], ...]
SETTLE_S = 15.0  # after a phase: what A's budget still holds back goes out (or expires)


@dataclass
class Placed:
    """One CreateOrder the client sent: when it was due (monotonic and wall), and the answer's code."""

    account: str
    client_order_id: str
    due_wall_ms: float
    code: grpc.StatusCode = grpc.StatusCode.OK


@dataclass
class PhaseResult:
    """What one phase measured, per account."""

    name: str
    sent_ms: dict[str, list[float]] = field(default_factory=dict)  # account -> submit -> sent, ms
    placed: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)  # RESOURCE_EXHAUSTED at the gateway
    never_sent: dict[str, int] = field(default_factory=dict)  # accepted, no POST seen
    answered_429: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)  # REJECTED orders in the service

    def p99(self, account: str) -> float | None:
        return p50_p99(self.sent_ms.get(account, []))[1]


async def _send(
    stub: order_pb2_grpc.OrderServiceAsyncStub,
    metadata: Metadata,
    request: pb.CreateOrderRequest,
    placed: Placed,
) -> None:
    try:
        await stub.CreateOrder(request, metadata=metadata, timeout=10)
    except grpc.aio.AioRpcError as exc:
        placed.code = exc.code()


async def _open_loop(
    stub: order_pb2_grpc.OrderServiceAsyncStub,
    metadata: Metadata,
    *,
    account: str,
    rate: float,
    seconds: float,
    symbol: str,
    quantity: str,
    tag: str,
) -> list[Placed]:
    """Send `rate` MARKET orders a second for `seconds` on `account`, each at its scheduled time
    (not after the previous answer); returns them once every answer is in."""
    placed: list[Placed] = []
    calls: list[asyncio.Task[None]] = []
    start, wall_start = time.monotonic(), time.time() * 1000
    for index in range(int(rate * seconds)):
        due = index / rate
        delay = start + due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        order = Placed(account, f"{tag}-{account}-{index}", wall_start + due * 1000)
        request = pb.CreateOrderRequest(
            symbol=symbol,
            side=pb.BUY if index % 2 == 0 else pb.SELL,
            type=pb.MARKET,
            quantity=quantity,
            client_order_id=order.client_order_id,
            account=account,
        )
        placed.append(order)
        calls.append(asyncio.create_task(_send(stub, metadata, request, order)))
    await asyncio.gather(*calls)
    return placed


def _admin_get(exchange_base: str, path: str) -> list[dict[str, object]]:
    with urllib.request.urlopen(f"{exchange_base}{path}", timeout=10) as response:
        return list(json.loads(response.read()))


async def _list_rejected(
    stub: order_pb2_grpc.OrderServiceAsyncStub, metadata: Metadata, account: str, tag: str
) -> int:
    page = await stub.ListOrders(
        pb.ListOrdersRequest(state=pb.REJECTED, account=account, limit=500), metadata=metadata, timeout=10
    )
    return sum(1 for order in page.orders if order.client_order_id.startswith(f"{tag}-"))


async def run_phase(
    *,
    name: str,
    grpc_target: str,
    exchange_base: str,
    account_keys: dict[str, str],
    rates: dict[str, float],
    seconds: float,
    symbol: str = "BTCUSDT",
    grpc_api_key: str = "",
    settle_s: float = SETTLE_S,
) -> PhaseResult:
    """Send each account's `rates` (orders/s) for `seconds`, let the backlog settle, then read the
    simulator's journal: when each accepted order's POST arrived, and any 429 per account.

    `account_keys` maps our account names to their API keys at the simulator (its journal
    names accounts by key)."""
    quantity = order_quantities(exchange_base, [symbol])[0][symbol]
    tag = f"{name}{int(time.time())}"
    metadata: Metadata = (("x-api-key", grpc_api_key),) if grpc_api_key else ()
    async with grpc.aio.insecure_channel(grpc_target) as channel:
        stub: order_pb2_grpc.OrderServiceAsyncStub = order_pb2_grpc.OrderServiceStub(channel)
        batches = await asyncio.gather(
            *(
                _open_loop(
                    stub,
                    metadata,
                    account=account,
                    rate=rate,
                    seconds=seconds,
                    symbol=symbol,
                    quantity=quantity,
                    tag=tag,
                )
                for account, rate in rates.items()
            )
        )
        await asyncio.sleep(settle_s)
        rejected = {account: await _list_rejected(stub, metadata, account, tag) for account in rates}
    result = PhaseResult(name, rejected=rejected)
    for account, placed in zip(rates, batches, strict=True):
        journal = _admin_get(exchange_base, f"/admin/requests?account={account_keys[account]}")
        first_post: dict[str, float] = {}
        for record in journal:
            cid = str(record.get("clientOrderId") or "")
            if record["method"] == "POST" and record["path"] == ORDER_PATH and cid.startswith(tag):
                first_post.setdefault(cid, float(str(record["time"])))
        accepted = [p for p in placed if p.code is grpc.StatusCode.OK]
        result.placed[account] = len(placed)
        result.refused[account] = sum(1 for p in placed if p.code is grpc.StatusCode.RESOURCE_EXHAUSTED)
        result.sent_ms[account] = [
            first_post[p.client_order_id] - p.due_wall_ms for p in accepted if p.client_order_id in first_post
        ]
        result.never_sent[account] = sum(1 for p in accepted if p.client_order_id not in first_post)
        result.answered_429[account] = sum(1 for r in journal if r.get("status") == 429)
    return result


def describe(result: PhaseResult) -> str:
    """One line per account: orders placed, refused, sent, never sent, 429s, REJECTED, p50/p99."""
    lines = []
    for account in result.placed:
        p50, p99 = p50_p99(result.sent_ms[account])
        lines.append(
            f"  {result.name:<9} account {account}: placed {result.placed[account]}, "
            f"refused {result.refused[account]}, sent {len(result.sent_ms[account])}, "
            f"never sent {result.never_sent[account]}, 429s {result.answered_429[account]}, "
            f"REJECTED {result.rejected[account]}, submit -> sent p50 {_ms(p50)} p99 {_ms(p99)}"
        )
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


# ---------------------------------------------------------------- the bench


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="rounds of (A idle, A flooded)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--flood-rate", type=float, default=60.0, help="account A's orders/s when flooded")
    parser.add_argument("--quiet-rate", type=float, default=10.0, help="account B's orders/s")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    idle_runs: list[list[float]] = []
    flooded_runs: list[list[float]] = []
    a_runs: list[list[float]] = []
    notes: dict[str, object] = {"flood_rate": args.flood_rate, "quiet_rate": args.quiet_rate}
    with (
        tempfile.TemporaryDirectory(prefix="bench-logs-") as logs,
        local_stack(
            "127.0.0.1:6379",
            "nats://127.0.0.1:4222",
            redis_db=BENCH_REDIS_DB,
            log_dir=Path(logs),
            accounts=2,
            extra_env=FLOOD_STACK_ENV,
        ) as stack,
    ):
        keys = {account.name: account.key for account in stack.accounts}
        for run in range(1, args.runs + 1):
            print(f"round {run}/{args.runs}", flush=True)
            for phase, rates in (
                ("a-idle", {QUIET: args.quiet_rate}),
                ("a-flooded", {FLOODED: args.flood_rate, QUIET: args.quiet_rate}),
            ):
                result = asyncio.run(
                    run_phase(
                        name=phase,
                        grpc_target=stack.grpc_target,
                        exchange_base=stack.exchange_base,
                        account_keys=keys,
                        rates=rates,
                        seconds=args.seconds,
                        grpc_api_key=stack.grpc_api_key,
                        settle_s=SETTLE_S if phase == "a-flooded" else 3.0,
                    )
                )
                print(describe(result), flush=True)
                notes[f"round {run} {phase}"] = describe(result).strip()
                if phase == "a-idle":
                    idle_runs.append(result.sent_ms[QUIET])
                else:
                    flooded_runs.append(result.sent_ms[QUIET])
                    a_runs.append(result.sent_ms[FLOODED])
    report(
        "account_flood",
        "Account B submit -> sent (ms), with account A idle and flooded beyond its ORDERS limits",
        {
            "B, A idle": idle_runs,
            "B, A flooded": flooded_runs,
            "A flooded (waits for its budget)": a_runs,
        },
        "B, A idle",
        notes=notes,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
