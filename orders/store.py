"""The Redis order store: the single source of truth for every order's state.

Every change is a compare-and-set on `version` in one Lua script, so concurrent
writers (worker, user-data stream, reconciler, gateway cancel) never overwrite each
other: the loser gets the stored order back in the same reply and re-applies its change to
it through the state machine. The
same script appends the change to the outbox and keeps the unsettled index, and an
order's keys expire (`ttl_s`) only once it is settled: open orders are never dropped.

With `redis.min_replica_acks` n > 0, every write (create, transition, enqueue) is followed
in the same pipeline by `WAIT n replica_ack_timeout_ms` (orders/replicas.py) and answers only
once n replicas hold it; fewer raise NotReplicated, which carries what the write returned. A
call that writes nothing (a repeated client_order_id, a change already made) confirms with a
probe write instead, so its answer is as replicated as the first one's. With 0, nothing extra
is sent.

A Redis outage leaves every public method as StoreUnavailable (orders/store_outages.py).
The key layout and the reads (get, search, unsettled, ...) are in orders/store_queries.py;
the Lua is in orders/store_scripts.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.commands.core import AsyncScript

from order_execution.orders import fsm, metrics
from order_execution.orders.errors import NotReplicated, OrderNotFound, RiskLimitExceeded, StoreConflict
from order_execution.orders.model import DEFAULT_ACCOUNT, Order, OrderState, decimal_str, now_ms
from order_execution.orders.outbox import Outbox, encode_fills
from order_execution.orders.replicas import NO_REPLICA_ACKS, ReplicaAcks, ReplicaProbe
from order_execution.orders.risk_layout import DAY_COUNTER_TTL_S, RiskKeys, from_units, to_units, utc_day
from order_execution.orders.risk_state import RiskCheck
from order_execution.orders.store_outages import store_adapter, store_outages
from order_execution.orders.store_queries import OrderQueries
from order_execution.orders.store_scripts import COMPARE_AND_SET, CREATE, PUSH
from order_execution.runtime.redis_connection import reply_text
from order_execution.runtime.settings import Settings

log = logging.getLogger(__name__)

_MAX_CAS_ATTEMPTS = 16
# A worker's claim is bookkeeping that the exchange's answer follows within milliseconds: it
# reaches the outbox together with the next change, so its readers (update streams, the NATS
# relay) wake once for both instead of competing with the POST for the CPU.
_HELD_BACK = frozenset({(OrderState.NEW, OrderState.SUBMITTING)})
# Accepted and not yet answered by the exchange: queued, or claimed and maybe waiting for the budget.
_UNSENT = frozenset({OrderState.NEW, OrderState.SUBMITTING})


@dataclass(frozen=True, slots=True)
class QueuePush:
    """A message to push onto a Dramatiq-layout Redis queue in the same atomic step.

    `tasks` builds it; the store only knows it must write `payload` under `message_id`
    in `messages_key`, append the id to `queue_key` and ring `doorbell_key`
    (`orders.store_scripts`).
    """

    messages_key: str
    queue_key: str
    doorbell_key: str
    message_id: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class CreateResult:
    order: Order
    created: bool  # False: client_order_id was seen before and `order` is the original


@dataclass(frozen=True, slots=True)
class TransitionResult:
    order: Order
    changed: bool


@store_adapter
class OrderStore(OrderQueries):
    """Async access to stored orders. One instance per process, shared by all tasks.

    The writes are here; the reads are inherited from `OrderQueries`.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        namespace: str = "oe",
        ttl_s: int = 30 * 86400,
        update_retention_s: int = 86400,
        replica_acks: ReplicaAcks = NO_REPLICA_ACKS,
    ) -> None:
        super().__init__(client, namespace=namespace)
        self.replica_acks = replica_acks
        self._probe = self.replica_probe("store")
        self._ttl_s = ttl_s
        self.outbox = Outbox(client, namespace=namespace, retention_s=update_retention_s)
        self._create = client.register_script(CREATE)
        self._cas = client.register_script(COMPARE_AND_SET)
        self._push = client.register_script(PUSH)

    @classmethod
    def from_settings(cls, client: aioredis.Redis, settings: Settings) -> OrderStore:
        """The store with the configured namespace, order TTL and outbox retention."""
        return cls(
            client,
            namespace=settings.redis.namespace,
            ttl_s=settings.performance.order_cache_ttl,
            update_retention_s=settings.performance.update_retention_s,
            replica_acks=ReplicaAcks.from_settings(settings.redis),
        )

    def replica_probe(self, reader: str) -> ReplicaProbe | None:
        """A probe for `reader` (its key `<namespace>:replica-probe:<reader>`) on this store's
        connection, or None when no replica acks are required."""
        if not self.replica_acks.enabled:
            return None
        return ReplicaProbe(self._redis, self.replica_acks, key=f"{self._prefix}:replica-probe:{reader}")

    def _record(
        self, order: Order, new_fills: str, was: OrderState | None, *, hold: bool = False
    ) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of the scripts' shared tail (`_RECORD`); `hold` holds the version back
        from the outbox until the next change."""
        risk_keys = self.risk_keys(order.account)
        keys = [
            self._order_key(order.order_id),
            self._client_key(order.client_order_id, order.account),
            self.outbox.key,
            self._unsettled_key,
            self._unsent_key(order.account, order.symbol),
            self._unsent_key(order.account),
            risk_keys.reserved,
            risk_keys.open_qty,
        ]
        args: list[Any] = [
            order.order_id,
            order.to_json(),
            order.created_at,
            1 if fsm.is_settled(order) else 0,
            self._ttl_s,
            self.outbox.trim_before(),
            new_fills,
            str(was or ""),
            1 if order.state in _UNSENT else 0,
            _open_units(order),
            1 if hold else 0,
        ]
        return keys, args

    async def create(
        self,
        order: Order,
        enqueue: Callable[[Order], QueuePush | None] | None = None,
        *,
        risk: RiskCheck | None = None,
    ) -> CreateResult:
        """Store a new order (version 1) and, atomically with it, its outbox entry and the push
        `enqueue` returns for the stored order.

        If `order.client_order_id` is already taken, nothing is written or queued and
        the existing order is returned with `created=False`. With `risk`, the same step
        checks the trading mode (the stricter of the order's account's kill switch and the
        switch for every account, as stored now) and the account's counting limits, and
        reserves the order against them until it is final; a refusal raises
        RiskLimitExceeded and writes nothing.
        A Redis outage raises StoreUnavailable naming the client order id to retry with.
        """
        stored = order.replace(version=1)
        risk_keys = self.risk_keys(order.account)
        keys, args = self._record(stored, "", None)
        keys += [self._index_key(), self._index_key(order.symbol), self._owner_index_key(order.owner)]
        keys += [
            risk_keys.mode,
            risk_keys.positions,
            risk_keys.orders_on(utc_day(order.created_at)),
            risk_keys.all_mode,  # the kill switch for every account: the stricter one applies
        ]
        args += _risk_args(stored, risk)
        _add_push(keys, args, enqueue(stored) if enqueue else None)
        # The write may have landed before Redis failed: only the client order id can tell.
        landed = (
            f"order {order.order_id} may have been stored. Retry with client_order_id "
            f"{order.client_order_id!r} (idempotent) or GetOrder it"
        )
        with store_outages(consequence=landed):
            answer, acks = await self._write(self._create, keys, args)
        if isinstance(answer, list):
            raise _refusal(stored, [reply_text(part) for part in answer])
        winner = reply_text(answer)
        if winner == order.order_id:
            result = CreateResult(stored, created=True)
        else:
            result = CreateResult(await self.get(winner), created=False)
            acks = await self._confirm_unwritten()  # the first write may not have reached a replica
        self.replica_acks.require(
            acks,
            what=f"order {result.order.order_id}",
            retry=f"retry with client_order_id {order.client_order_id!r}: a retry returns the same order",
            outcome=result,
        )
        return result

    def risk_keys(self, account: str = DEFAULT_ACCOUNT) -> RiskKeys:
        """The keys of `account`'s risk state."""
        return RiskKeys(self._prefix, account)

    async def link_client_id(
        self, client_order_id: str, order_id: str, account: str = DEFAULT_ACCOUNT
    ) -> None:
        """Make `client_order_id` (an id the exchange chose, e.g. for the order a conditional
        order triggered) find `order_id` too, in `account`; an id already taken is left as it is."""
        await self._redis.set(self._client_key(client_order_id, account), order_id, nx=True, ex=self._ttl_s)

    async def transition(
        self,
        order_id: str,
        change: Callable[[Order], Order | None],
        *,
        enqueue: Callable[[Order], QueuePush | None] | None = None,
        current: Order | None = None,
    ) -> TransitionResult:
        """Apply `change` to the current order and store the result atomically.

        `change` gets the stored order and returns the new one, or None for "no change"
        (typically a `fsm` function). On a concurrent write it is re-run on the fresh
        order, which the losing write answers with (no read of its own). A caller that
        holds a recent copy passes it as `current`, which saves the read when nobody
        changed the order since. The new version goes to the outbox in the same atomic
        step (a worker's claim, NEW -> SUBMITTING, with the next change), and so does
        the push `enqueue` returns for it, if any.
        Raises OrderNotFound, StoreConflict after repeated lost races, NotReplicated
        (carrying the result) when the replicas did not confirm it (see the module docstring),
        or StoreUnavailable when Redis cannot answer.
        """
        key = self._order_key(order_id)
        for _ in range(_MAX_CAS_ATTEMPTS):
            if current is None:
                data = await self._redis.hget(key, "data")
                if data is None:
                    raise OrderNotFound(order_id)
                current = Order.from_json(data)
            updated = change(current)
            if updated is None:
                result = TransitionResult(current, changed=False)
                self._require_replicated(await self._confirm_unwritten(), result)
                return result
            new_version = current.version + 1
            updated = updated.replace(version=new_version)
            keys, args = self._record(
                updated,
                encode_fills(updated.fills[len(current.fills) :]),
                current.state,
                hold=(current.state, updated.state) in _HELD_BACK,
            )
            args += [current.version, new_version]
            _add_push(keys, args, enqueue(updated) if enqueue else None)
            outcome, acks = await self._write(self._cas, keys, args)
            if outcome == 1:
                metrics.order_changed(current.state, updated)
                result = TransitionResult(updated, changed=True)
                self._require_replicated(acks, result)
                return result
            if outcome == -1:
                raise OrderNotFound(order_id)
            # Someone else wrote it first: the script answered with what is stored now.
            current = Order.from_json(outcome)
        raise StoreConflict(f"order {order_id}: gave up after {_MAX_CAS_ATTEMPTS} concurrent updates")

    async def enqueue(self, push: QueuePush) -> None:
        """Queue a message on its own, with no order change (the reconciler re-queues stuck orders,
        the gateway queues amendments and cancel-all). Raises NotReplicated like `transition`."""
        keys: list[str] = []
        args: list[Any] = []
        _add_push(keys, args, push)
        _, acks = await self._write(self._push, keys, args)
        self.replica_acks.require(
            acks, what=f"request (queue message {push.message_id})", retry="repeating the call is safe"
        )

    async def confirm_replicated(self) -> None:
        """Return once `min_replica_acks` replicas hold everything written before this call; for
        an answer built from a read. Raises NotReplicated if they do not within the timeout."""
        self.replica_acks.require(
            await self._confirm_unwritten(), what="the state read", retry="repeating the call is safe"
        )

    async def until_replicated(self, refused: NotReplicated, *, budget_ms: int) -> object:
        """Wait, probe after probe, until the replicas hold the write `refused` was raised for;
        return its outcome. For workers and the listener, which must not move on before (a
        Dramatiq ack, the POST after a claim). Raises `refused` after `budget_ms`, or
        StoreUnavailable as it comes.
        """
        deadline = now_ms() + budget_ms
        while self._probe is not None and not await self._probe.holds_all():
            if now_ms() >= deadline:
                raise refused
            log.warning("waiting for replicas to confirm a write: %s", refused)
        return refused.outcome

    async def _write(self, script: AsyncScript, keys: list[str], args: list[Any]) -> tuple[Any, int]:
        """Run `script`; with replica acks required, `WAIT` in the same pipeline. Returns its answer
        and the replicas that confirmed (the number required when none are)."""
        if not self.replica_acks.enabled:
            return await script(keys=keys, args=args), 0
        for _ in range(2):
            pipe = self._redis.pipeline(transaction=False)
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            self.replica_acks.add_wait(pipe)
            answer, acks = await pipe.execute(raise_on_error=False)
            if isinstance(answer, redis.exceptions.NoScriptError):
                await self._redis.script_load(script.script)  # a restarted or new primary
                continue
            for reply in (answer, acks):
                if isinstance(reply, Exception):
                    raise reply
            return answer, int(acks)
        raise redis.exceptions.NoScriptError("the order script vanished again right after it was loaded")

    async def _confirm_unwritten(self) -> int:
        """The replicas that hold everything so far, by a probe (`needed` when none are required)."""
        return await self._probe.confirmed() if self._probe is not None else 0

    def _require_replicated(self, acks: int, result: TransitionResult) -> None:
        order = result.order
        self.replica_acks.require(
            acks,
            what=f"order {order.order_id} (client_order_id {order.client_order_id!r}) as {order.state}",
            retry="repeat the call with the same ids, or GetOrder it: a retry finds what is stored",
            outcome=result,
        )


def _open_units(order: Order) -> int:
    """The order's quantity still open, in 1e-8 units; -1 once it is final (release it)."""
    if order.state in fsm.FINAL_STATES:
        return -1
    return max(to_units(order.quantity - order.filled_quantity), 0)


def _risk_args(order: Order, risk: RiskCheck | None) -> list[Any]:
    """ARGV[12..21] of CREATE: the risk gate's order and limits (see `orders.store_scripts`)."""
    if risk is None:
        return [0, "", "", "", 0, 0, 0, 0, -1, DAY_COUNTER_TTL_S]
    return [
        1,
        f"{order.symbol}:{order.side}",
        str(order.side),
        order.symbol,
        to_units(order.quantity),
        1 if order.reduce_only else 0,
        risk.max_open_orders,
        risk.max_orders_per_day,
        -1 if risk.max_position is None else to_units(risk.max_position),
        DAY_COUNTER_TTL_S,
    ]


def _refusal(order: Order, answer: list[str]) -> RiskLimitExceeded:
    """The RiskLimitExceeded for the risk gate's {limit, value, allowance}."""
    limit, value, allowance = answer[:3]
    if limit == "trading_mode":
        if answer[3:] == ["all"]:
            switch, show = "the kill switch for every account", "order-execution risk show"
        else:
            switch = f"the kill switch of account {order.account}"
            show = f"order-execution risk show --account {order.account}"
        return RiskLimitExceeded(
            "trading_mode", f"trading is {value}: {allowance} ({switch}; see `{show}`)", limit=limit
        )
    if limit == "max_position_quantity":
        return RiskLimitExceeded(
            "quantity",
            f"{order.symbol} position with open {order.side} orders would reach "
            f"{decimal_str(from_units(value))}, above the allowance {decimal_str(from_units(allowance))} "
            f"(risk.max_position_quantity)",
            limit=limit,
        )
    what = "open orders" if limit == "max_open_orders" else "orders today (UTC)"
    return RiskLimitExceeded(
        limit,
        f"this order would make {value} {what}, above the allowance {allowance} (risk.{limit})",
        limit=limit,
    )


def _add_push(keys: list[str], args: list[Any], push: QueuePush | None) -> None:
    if push is not None:
        keys += [push.messages_key, push.queue_key, push.doorbell_key]
        args += [push.message_id, push.payload]
