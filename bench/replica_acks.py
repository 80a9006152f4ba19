"""The cost of `redis.min_replica_acks`: CreateOrder latency with 0 and with 1, in the same invocation.

Starts its own Redis primary and one replica, each a redis-server on a free port of 127.0.0.1
with its data in a temp dir, configured as `up --ha` configures its data nodes
(launcher/ha_server_configs.redis_node_config: a random password, `replicaof`,
`repl-diskless-sync-delay 0`, `min-replicas-to-write 1`; launcher/launch.redis_command:
append-only, fsync every second), and stops both by pid at the end, also on failure. NATS is the
machine's (127.0.0.1:4222), as for the other benches.

Per run (`--runs`, default 3) two phases, one per series, alternating which goes first from run
to run so a drift of the machine is not read as the setting's cost. Each phase starts the stack
afresh (launcher/stack.py in load-test mode, as bench/scrape_load.py runs it: simulator, one worker
per core, a listener and the gateway) pointed at the primary with
`ORDER_EXECUTION__REDIS__MIN_REPLICA_ACKS` 0 or 1 (`ORDER_EXECUTION__REDIS__REPLICA_ACK_TIMEOUT_MS`
at the setting's default), warms it up, and sends `--rate` MARKET CreateOrders a second (default
100) over two symbols for `--phase-s` seconds (default 10), open-loop. A stack per phase rather
than two stacks side by side: on 2 cores an idle second stack would take CPU from the measured
one, and the setting is read once at start. Restarting costs a few seconds per phase, not the
measurement (each phase is measured after the same warm-up).

Replication is checked, so the series differ for the right reason: the primary's WAIT count
(`INFO commandstats`, reset before each measured phase) must be > 0 with acks 1 and 0 with acks
0, and after each phase the replica must reach the primary's replication offset.

The table (bench/report.py) shows per series the median over runs of each run's median and p99,
for CreateOrder ack (request to reply) and submit -> update (CreateOrder sent to the first update
on StreamOrderUpdates carrying the exchange's answer, as bench/throughput.py measures it), each
with its "x baseline" against the same measure with acks 0; the table printed after it (also in
the JSON's notes) adds the p99 ratio and the milliseconds added. Writes
bench/results/replica_acks.json and replica_acks.png.

Usage: python bench/replica_acks.py [--runs 3] [--phase-s 10] [--rate 100] [--log-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
import redis

from bench.load_phases import warm_up
from bench.load_session import Session, latencies, order_quantities, print_lost
from bench.redis_db import BENCH_REDIS_DB
from bench.report import fmt, percentile, report, summarize
from bench.scrape_load import send_orders
from bench.throughput import NATS, SIM_ARGS
from order_execution.launcher.ha_server_configs import redis_node_config
from order_execution.launcher.launch import redis_command
from order_execution.launcher.processes import ManagedProcess, free_port, port_open, worker_processes
from order_execution.launcher.run_dir import private_dir, write_private
from order_execution.launcher.stack import local_stack
from order_execution.proto import order_pb2_grpc
from order_execution.runtime.addresses import redis_url

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
ACK_TIMEOUT_MS = 500  # redis.replica_ack_timeout_ms's default; a loopback replica answers in well under 1 ms
REDIS_READY_S = 30.0  # a replica's first sync on a loaded 2-core machine: seconds at worst, 30 is wide
CAUGHT_UP_S = 10.0  # the replica reaches the primary's offset within ms once the orders stop
ACKS = (0, 1)
ACK = "CreateOrder ack, min_replica_acks {n}"
UPDATE = "submit -> update, min_replica_acks {n}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--phase-s", type=float, default=10.0, help="seconds per phase (default 10)")
    parser.add_argument("--rate", type=int, default=100, help="CreateOrders per second (default 100)")
    parser.add_argument("--log-dir", type=Path, help="keep the servers' logs here (default: a temp dir)")
    return parser.parse_args()


# ---------------------------------------------------------------- the primary and its replica


@dataclass
class RedisPair:
    """A Redis primary and its one replica on loopback, both requiring `password`."""

    primary_port: int
    replica_port: int
    password: str

    def address(self, db: int) -> str:
        """The primary as a redis:// URL with the password, for local_stack and the service."""
        return redis_url(f"127.0.0.1:{self.primary_port}", password=self.password, db=db)

    def _client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, password=self.password, socket_timeout=5)

    def info(self, port: int, section: str) -> dict[str, Any]:
        with self._client(port) as client:
            return dict(client.info(section))

    def replica_online(self) -> bool:
        try:
            info = self.info(self.primary_port, "replication")
        except redis.RedisError:
            return False
        return info.get("connected_slaves") == 1 and info.get("slave0", {}).get("state") == "online"

    def reset_stats(self) -> None:
        """Zero the primary's command counters (CONFIG RESETSTAT)."""
        with self._client(self.primary_port) as client:
            client.config_resetstat()

    def wait_calls(self) -> int:
        """WAIT commands the primary ran since the last `reset_stats`."""
        stats = self.info(self.primary_port, "commandstats")
        return int(stats.get("cmdstat_wait", {}).get("calls", 0))

    def replica_catches_up(self) -> tuple[int, int]:
        """The primary's replication offset now, and the replica's once it reached it (or at
        CAUGHT_UP_S, when it is still behind)."""
        target = int(self.info(self.primary_port, "replication")["master_repl_offset"])
        deadline = time.monotonic() + CAUGHT_UP_S
        while True:
            offset = int(self.info(self.replica_port, "replication").get("slave_repl_offset", -1))
            if offset >= target or time.monotonic() > deadline:
                return target, offset
            time.sleep(0.05)


@contextmanager
def redis_pair(work_dir: Path, log_dir: Path) -> Iterator[RedisPair]:
    """Start the primary and the replica (see the module docstring), wait until the replica is
    online, and stop both by pid on exit, also when starting fails. SystemExit if there is no
    redis-server; RuntimeError with the log tail if one does not come up."""
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit(
            "replica_acks bench: redis-server is not on the PATH; install Redis "
            "(e.g. `apt-get install redis-server`): the bench starts its own primary and replica"
        )
    password = secrets.token_urlsafe(24)
    pair = RedisPair(free_port(), free_port(), password)
    while pair.replica_port == pair.primary_port:
        pair.replica_port = free_port()
    started: list[ManagedProcess] = []
    try:
        for name, port, primary_port in (
            ("redis-primary", pair.primary_port, None),
            ("redis-replica", pair.replica_port, pair.primary_port),
        ):
            data = private_dir(work_dir / name)
            config = work_dir / f"{name}.conf"
            write_private(config, redis_node_config(password, primary_port))
            command = redis_command(server, port, data, data / "redis-server.pid", config)
            process = ManagedProcess(name, command, log_dir=log_dir, die_with_parent=True, umask=0o077)
            started.append(process)  # before it starts: an interrupt after the fork still stops it
            process.start()
            process.wait_until("accepting connections", partial(port_open, "127.0.0.1", port), REDIS_READY_S)
        started[0].wait_until("serving its replica", pair.replica_online, REDIS_READY_S)
        yield pair
    finally:
        for process in reversed(started):
            process.stop()


# ---------------------------------------------------------------- one phase


@dataclass
class Phase:
    acks: int
    ack_ms: list[float]
    update_ms: list[float]
    orders: int
    refused: int
    unanswered: int
    wait_calls: int
    primary_offset: int
    replica_offset: int
    stack_start_s: float = 0.0


async def measure(
    grpc_target: str, exchange_base: str, pair: RedisPair, acks: int, args: argparse.Namespace
) -> Phase:
    """Warm the stack up, then `args.rate` orders a second for `args.phase_s` seconds, counting the
    primary's WAITs over the measured orders only; the replica's catch-up is read at the end."""
    quantities, _ = order_quantities(exchange_base, SYMBOLS)
    async with grpc.aio.insecure_channel(grpc_target) as channel:
        session = Session(order_pb2_grpc.OrderServiceStub(channel), SYMBOLS, quantities)
        reader = asyncio.create_task(session.read_stream())
        try:
            await asyncio.sleep(0.5)
            await warm_up(session)
            await session.settle()
            pair.reset_stats()
            orders = await send_orders(session, args.rate, args.phase_s)
            wait_calls = pair.wait_calls()
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
    print_lost(f"min_replica_acks {acks}", orders)
    primary_offset, replica_offset = pair.replica_catches_up()
    samples = latencies(orders)
    return Phase(
        acks=acks,
        ack_ms=samples["ack"],
        update_ms=samples["answer"],
        orders=len(orders),
        refused=sum(1 for o in orders if o.error),
        unanswered=sum(1 for o in orders if not o.error and not o.answered_in_time()),
        wait_calls=wait_calls,
        primary_offset=primary_offset,
        replica_offset=replica_offset,
    )


def run_phase(pair: RedisPair, acks: int, log_dir: Path, args: argparse.Namespace) -> Phase:
    """A fresh stack with `redis.min_replica_acks` = `acks` (logs in `log_dir`), measured, then stopped."""
    started = time.perf_counter()
    with local_stack(
        pair.address(BENCH_REDIS_DB),
        NATS,
        redis_db=BENCH_REDIS_DB,
        log_dir=log_dir,
        symbols=SYMBOLS,
        rate_limits=False,
        simulator_args=SIM_ARGS,
        workers=worker_processes(0),
        extra_env={
            "ORDER_EXECUTION__REDIS__MIN_REPLICA_ACKS": str(acks),
            "ORDER_EXECUTION__REDIS__REPLICA_ACK_TIMEOUT_MS": str(ACK_TIMEOUT_MS),
        },
    ) as stack:
        stack_start_s = time.perf_counter() - started
        phase = asyncio.run(measure(stack.grpc_target, stack.exchange_base, pair, acks, args))
    phase.stack_start_s = stack_start_s
    return phase


def check_replication(phase: Phase) -> None:
    """SystemExit unless WAIT ran exactly when it should and the replica holds what the primary has."""
    if phase.acks and phase.wait_calls == 0:
        raise SystemExit(
            f"min_replica_acks {phase.acks} but the primary ran no WAIT: the setting did not apply"
        )
    if not phase.acks and phase.wait_calls:
        raise SystemExit(f"min_replica_acks 0 but the primary ran {phase.wait_calls} WAITs")
    if phase.replica_offset < phase.primary_offset:
        raise SystemExit(
            f"the replica is at offset {phase.replica_offset}, behind the primary's "
            f"{phase.primary_offset}, {CAUGHT_UP_S:.0f} s after the orders"
        )


def phase_line(run: int, runs: int, phase: Phase) -> str:
    p = percentile
    return (
        f"run {run}/{runs}: min_replica_acks {phase.acks}: stack up in {phase.stack_start_s:.1f} s; "
        f"{len(phase.ack_ms)}/{phase.orders} acks p50/p99 {fmt(p(phase.ack_ms, 50), 2)}/"
        f"{fmt(p(phase.ack_ms, 99), 2)} ms, submit -> update {fmt(p(phase.update_ms, 50), 2)}/"
        f"{fmt(p(phase.update_ms, 99), 2)} ms; WAIT calls {phase.wait_calls} "
        f"({phase.wait_calls / phase.orders:.1f}/order); replica offset {phase.replica_offset} "
        f">= primary's {phase.primary_offset}"
    )


# ---------------------------------------------------------------- the report


def same_measure_ratios(series: dict[str, list[list[float]]]) -> dict[str, dict[str, float]]:
    """Per measure, acks 1 over acks 0 of the medians over runs (of run medians, of run p99s)."""
    out = {}
    for measure, template in (("CreateOrder ack", ACK), ("submit -> update", UPDATE)):
        base, with_acks = summarize(series[template.format(n=0)]), summarize(series[template.format(n=1)])
        out[measure] = {
            "median_x": with_acks["median_ms"] / base["median_ms"],
            "p99_x": with_acks["p99_ms"] / base["p99_ms"],
            "median_added_ms": with_acks["median_ms"] - base["median_ms"],
            "p99_added_ms": with_acks["p99_ms"] - base["p99_ms"],
        }
    return out


def print_ratios(ratios: dict[str, dict[str, float]]) -> None:
    print("\nmin_replica_acks 1 against 0, same measure, same invocation")
    print(f"{'measure':<18} {'median x':>9} {'+ms':>7} {'p99 x':>9} {'+ms':>7}")
    for measure, r in ratios.items():
        print(
            f"{measure:<18} {r['median_x']:>9.2f} {r['median_added_ms']:>+7.2f} "
            f"{r['p99_x']:>9.2f} {r['p99_added_ms']:>+7.2f}"
        )


def main() -> int:
    args = parse_args()
    started = time.perf_counter()
    print(
        f"replica-acks bench: {args.runs} runs x 2 phases (min_replica_acks 0 and 1, a fresh stack each) "
        f"x {args.phase_s:g} s, {args.rate} MARKET orders/s",
        flush=True,
    )
    series: dict[str, list[list[float]]] = {label.format(n=n): [] for label in (ACK, UPDATE) for n in ACKS}
    phases: list[Phase] = []
    with tempfile.TemporaryDirectory(prefix="bench-replica-acks-") as work:
        log_dir = args.log_dir or Path(work) / "logs"
        with redis_pair(Path(work), log_dir) as pair:
            print(
                f"redis primary 127.0.0.1:{pair.primary_port}, replica 127.0.0.1:{pair.replica_port} "
                f"(online in {time.perf_counter() - started:.1f} s)",
                flush=True,
            )
            for run in range(1, args.runs + 1):
                for acks in ACKS if run % 2 else tuple(reversed(ACKS)):
                    phase = run_phase(pair, acks, log_dir / f"run-{run}-acks-{acks}", args)
                    print(phase_line(run, args.runs, phase), flush=True)
                    check_replication(phase)
                    if phase.refused or phase.unanswered:
                        print(f"    {phase.refused} refused, {phase.unanswered} unanswered", flush=True)
                    series[ACK.format(n=acks)].append(phase.ack_ms)
                    series[UPDATE.format(n=acks)].append(phase.update_ms)
                    phases.append(phase)
    ratios = same_measure_ratios(series)
    report(
        "replica_acks",
        f"CreateOrder ack and submit -> update at {args.rate}/s, min_replica_acks 0 vs 1 (ms)",
        series,
        {measure.format(n=n): measure.format(n=0) for measure in (ACK, UPDATE) for n in ACKS},
        notes={
            "rate_per_s": args.rate,
            "phase_s": args.phase_s,
            "symbols": SYMBOLS,
            "replica_ack_timeout_ms": ACK_TIMEOUT_MS,
            "redis": "own primary + 1 replica on loopback (redis_node_config, redis_command)",
            "ratio_to_acks_0": ratios,
            "phases": [
                {k: v for k, v in vars(p).items() if k not in ("ack_ms", "update_ms")} for p in phases
            ],
            "elapsed_s": round(time.perf_counter() - started, 1),
        },
    )
    print_ratios(ratios)
    waits = {n: statistics.median(p.wait_calls / p.orders for p in phases if p.acks == n) for n in ACKS}
    print(
        f"replication exercised: WAIT calls per order {waits[0]:.1f} with acks 0, {waits[1]:.1f} with "
        "acks 1; the replica reached the primary's offset after every phase"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
