"""The chaos test's gateway kill: kill -9 the gateway mid-CreateOrder, restart it, and account for the calls.

`kill_gateway` waits until a CreateOrder call is in flight, kill -9s the gateway's process
group, and starts a new gateway on the same gRPC and HTTP ports once `restart_after_s`
has passed (returning when /health/ready answers). `ride_through` then reads the
submitter's log of CreateOrder attempts (pure data, so it is tested without processes):
which calls died with the gateway, which were refused while it was down, and whether each
order they were for was accepted in the end, by a retry with the same client_order_id.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tests.chaos.cluster import ChaosCluster
from tests.chaos.workload import Clock, CreateCall, Submitter


@dataclass(frozen=True)
class GatewayOutage:
    """One gateway kill, in test-clock seconds."""

    killed_s: float
    ready_s: float  # the new gateway answered /health/ready
    in_flight: int  # CreateOrder calls the client had outstanding at the kill
    old: str  # the killed incarnation's name and pid
    new: str  # its successor's

    def line(self) -> str:
        return (
            f"kill -9 {self.old} with {self.in_flight} CreateOrder call(s) in flight; restarted as "
            f"{self.new} on the same ports, ready {self.ready_s - self.killed_s:.1f} s after the kill"
        )


@dataclass(frozen=True)
class RideThrough:
    """What one gateway kill did to the CreateOrder calls around it."""

    outage: GatewayOutage
    recovered_s: float | None  # end of the first CreateOrder started after the kill that succeeded
    died_in_flight: Counter[str]  # calls outstanding at the kill, by how they failed
    refused_while_down: Counter[str]  # calls started after the kill, failed before recovery
    orders: frozenset[str]  # client order ids of all those calls
    accepted: frozenset[str]  # those of `orders` a retry got accepted
    stored_before_kill: frozenset[str]  # died in flight, yet the retry's answer was `duplicate`

    @property
    def calls(self) -> int:
        return sum(self.died_in_flight.values()) + sum(self.refused_while_down.values())

    def line(self) -> str:
        o = self.outage
        recovered = f"+{self.recovered_s - o.killed_s:.1f} s" if self.recovered_s is not None else "never"
        died = sum(self.died_in_flight.values())
        return (
            f"gateway kill at {o.killed_s:.1f} s (ready +{o.ready_s - o.killed_s:.1f} s, "
            f"first CreateOrder OK {recovered}): {o.in_flight} CreateOrder call(s) in flight, {died} died"
            f"{_codes(self.died_in_flight)}, {len(self.stored_before_kill)} of those already stored "
            f"(the retry answered duplicate); {sum(self.refused_while_down.values())} calls refused while "
            f"down{_codes(self.refused_while_down)}; {len(self.orders)} orders retried with the same "
            f"client_order_id, {len(self.accepted)} accepted"
        )


def _codes(counts: Counter[str]) -> str:
    return " (" + ", ".join(f"{code} x{n}" for code, n in counts.most_common()) + ")" if counts else ""


def ride_through(
    outage: GatewayOutage, calls: Sequence[CreateCall], accepted_ids: Mapping[str, str | None]
) -> RideThrough:
    """Account for the CreateOrder `calls` a gateway outage touched.

    A call died in flight if it started before the kill and failed at or after it; it was
    refused while down if it started after the kill and failed before the first call
    started after the kill succeeded (the client's channel may fail fast a little longer
    than the gateway is away). `accepted_ids`: client order id -> the order id CreateOrder
    finally answered (None: never accepted).
    """
    after = [c for c in calls if c.started_s >= outage.killed_s]
    recovered = min((c.ended_s for c in after if c.outcome == "OK"), default=None)
    limit = recovered if recovered is not None else float("inf")
    died = [c for c in calls if c.outcome != "OK" and c.started_s < outage.killed_s <= c.ended_s]
    refused = [c for c in after if c.outcome != "OK" and c.ended_s <= limit]
    orders = frozenset(c.client_order_id for c in (*died, *refused))
    died_ids = {c.client_order_id for c in died}
    duplicates = {c.client_order_id for c in calls if c.outcome == "OK" and c.duplicate}
    return RideThrough(
        outage=outage,
        recovered_s=recovered,
        died_in_flight=Counter(c.outcome for c in died),
        refused_while_down=Counter(c.outcome for c in refused),
        orders=orders,
        accepted=frozenset(cid for cid in orders if accepted_ids.get(cid)),
        stored_before_kill=frozenset(died_ids & duplicates),
    )


async def kill_gateway(
    cluster: ChaosCluster,
    submitter: Submitter,
    clock: Clock,
    rng: random.Random,
    *,
    wait_s: float,
    lag_s: float,
    restart_after_s: float,
    ready_timeout_s: float,
) -> GatewayOutage:
    """kill -9 the gateway while a CreateOrder call is in flight; start a new one on the same ports.

    Waits (up to `wait_s`) until the submitter has a call outstanding, and still has one
    a random 0..`lag_s` later (so calls die at different points of their handling), kills
    the gateway's process group, waits `restart_after_s` and starts the gateway again,
    returning once it is ready. Raises RuntimeError if it is not ready in `ready_timeout_s`.
    """
    victim = cluster.gateway
    assert victim is not None, "the cluster has no gateway"
    deadline = clock() + wait_s
    while clock() < deadline:
        while submitter.creates_in_flight == 0 and clock() < deadline:
            await asyncio.sleep(0.001)
        await asyncio.sleep(rng.uniform(0, lag_s))
        if submitter.creates_in_flight:  # still outstanding after the lag: now
            break
    in_flight, killed_s = submitter.creates_in_flight, clock()
    # In the event loop, not a thread: the client sees no call complete between the count and the kill.
    cluster.kill9(victim)
    await asyncio.sleep(restart_after_s)
    fresh = await asyncio.to_thread(cluster.start_gateway, ready_timeout_s)
    return GatewayOutage(
        killed_s=killed_s,
        ready_s=clock(),
        in_flight=in_flight,
        old=f"{victim.name} (pgid {victim.pid})",
        new=f"{fresh.name} (pid {fresh.pid})",
    )
