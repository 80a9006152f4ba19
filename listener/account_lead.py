"""What a listener runs for one exchange account while it holds that account's lease.

Everything here uses the account's own client (its API key, its clock offset, its ORDERS
budget) and touches only the account's orders and keys:
* its user-data stream, each order event applied to the account's orders
  (`listener.event_lanes`: in order within one order, different orders at once), each
  ACCOUNT_UPDATE's positions to the account's risk state;
* its reconciler: a sweep at start, after every stream (re)connection and every
  `reconcile.interval_s`, of the account's unsettled orders only;
* its positions (positionRisk) for the gateways' pre-trade risk;
* its exchange clock sync, which its signed queries need;
* its dead-man switch (`dead_man`): the account's countdownCancelAll kept armed for every
  symbol where the account has open orders;
* its kill switch's cancel of every open order, when the gateway that took it did not finish it
  within `risk.cancel_open_grace_ms` (`service_layer.kill_switch`), checked every second;
* and `duties`: what the process gives one account to run for the whole deployment (see
  `listener.process`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from order_execution.exchange.client import BinanceClient
from order_execution.exchange.user_stream import OrderEvent, UserStream
from order_execution.listener.dead_man import DeadManSwitch
from order_execution.listener.event_lanes import EventLanes, Work, run_each
from order_execution.listener.order_events import OrderEventRecorder
from order_execution.listener.reconciler import ReconcilePolicy, Reconciler
from order_execution.listener.risk_feeds import RiskFeeds
from order_execution.orders.model import now_ms
from order_execution.orders.risk_state import RiskState
from order_execution.orders.store import OrderStore
from order_execution.runtime.settings import Settings
from order_execution.service_layer.kill_switch import finish_overdue_cancel_open
from order_execution.tasks.messages import cancel_order_push

log = logging.getLogger(__name__)

Duty = Callable[[], Coroutine[Any, Any, None]]
LaneItem = OrderEvent | Work  # an order's news, or work of the account's own lane (a positions write)
_CANCEL_OPEN_CHECK_S = 1.0  # how often the leader looks for a kill switch's unfinished cancel-open
_ACCOUNT_LANE = "account updates"  # a space: no client order id can name this lane


class AccountLead:
    """One account's listener work, started by `start` and stopped by `stop` (see the module)."""

    def __init__(
        self,
        account: str,
        *,
        settings: Settings,
        store: OrderStore,
        exchange: BinanceClient,
        risk_state: RiskState,
        stream_url: str,
        holder_id: str,
        duties: Sequence[Duty] = (),
    ) -> None:
        s = settings
        self.account = account
        self.settings = settings
        self.store = store
        self.exchange = exchange
        self.holder_id = holder_id
        self.risk_state = risk_state
        self.risk_feeds = RiskFeeds(risk_state, exchange, symbols=s.symbols)
        self.stream = UserStream(
            exchange,
            stream_url,
            keepalive_interval_s=s.listener.keepalive_interval_s,
            reconnect_after_s=s.listener.reconnect_after_s,
            backoff_max_s=s.listener.reconnect_backoff_max_s,
            heartbeat_s=s.listener.stream_heartbeat_s,
            on_account=self._on_account_update,
        )
        self.recorder = OrderEventRecorder(store, exchange, account=account)
        self.lanes: EventLanes[LaneItem] = EventLanes(
            self._run_lane, max_in_flight=s.listener.max_events_in_flight
        )
        self.reconciler = Reconciler(store, exchange, ReconcilePolicy.from_settings(s), account=account)
        self.dead_man = DeadManSwitch(store, exchange, countdown_ms=s.dead_man.countdown_ms, account=account)
        self.last_event_ms = 0  # when the stream last brought news (Unix ms; 0: none since start)
        self._duties = tuple(duties)
        self._positions_flush_queued = False
        self._sweep_now = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    def start(self) -> None:
        """Start the account's work (see the module); a sweep comes first, for whatever happened
        while nobody led the account."""
        self._sweep_now.set()
        s = self.settings
        jobs: list[Coroutine[Any, Any, None]] = [
            self.stream.run(self._on_order_event, self._on_stream_connect),
            self._reconcile_forever(),
            every(s.performance.symbol_info_refresh, self._sync_clock),
            self.risk_feeds.run_positions(s.risk.position_refresh_s),
            every(_CANCEL_OPEN_CHECK_S, self.finish_cancel_open),
            *(duty() for duty in self._duties),
        ]
        if s.dead_man.enabled:
            jobs.append(self.dead_man.run(s.dead_man.interval_s))
        self._tasks = [asyncio.create_task(job, name=f"listener {self.account}") for job in jobs]

    async def stop(self) -> None:
        """Stop everything `start` started; what the lanes had not applied, the next leader's sweep
        settles."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.lanes.close()
        self._positions_flush_queued = False  # a flush it canceled; positionRisk is re-read on leading

    def status(self) -> dict[str, object]:
        """The account's fields of the listener status (`orders.listener_status`)."""
        return {
            "account": self.account,
            "leader": self.holder_id,
            "user_stream": "connected" if self.stream.connected else "reconnecting",
            "stream_connections": self.stream.connections,
            "last_event_at": self.last_event_ms,
            "unknown_orders_at_exchange": self.reconciler.unknown_orders_seen,
            "foreign_events": self.recorder.foreign,
            "awaiting_link_events": self.recorder.awaiting_link,
            "dead_man_armed": sorted(self.dead_man.armed),
        }

    async def _on_order_event(self, event: OrderEvent) -> None:
        """An order's news goes on the order's lane. A conditional order's is applied at once, before
        anything that came after it: the order it triggers is recognised by the trigger's time."""
        self.last_event_ms = now_ms()
        if event.conditional:
            await self.recorder.record(event)
        else:
            await self.lanes.submit(event.client_order_id, event)

    async def _run_lane(self, lane: str, items: Sequence[LaneItem]) -> None:
        """One batch of a lane, in order: an order's events applied together
        (`OrderEventRecorder.record_all`: one lookup round trip for all), work run in turn."""
        events: list[OrderEvent] = []
        for item in [*items, None]:
            if isinstance(item, OrderEvent):
                events.append(item)
                continue
            if events:
                await self.recorder.record_all(events)
                events = []
            if item is not None:
                await run_each(lane, [item])

    async def _on_account_update(self, payload: dict[str, Any]) -> None:
        """Positions are noted at once and written in a lane of their own, every change noted
        before a write starts in that write: one write queued at a time, however many fills."""
        self.last_event_ms = now_ms()
        if self.risk_feeds.note_account_update(payload) and not self._positions_flush_queued:
            self._positions_flush_queued = True
            await self.lanes.submit(_ACCOUNT_LANE, self._flush_positions)

    async def _flush_positions(self) -> None:
        self._positions_flush_queued = False  # what is noted from now on needs the next write
        await self.risk_feeds.flush_positions()

    async def _on_stream_connect(self) -> None:
        self._sweep_now.set()

    async def _reconcile_forever(self) -> None:
        interval = self.settings.reconcile.interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sweep_now.wait(), timeout=interval)
            self._sweep_now.clear()
            try:
                result = await self.reconciler.sweep()
                if result.changed or result.budget_exhausted:
                    log.info(
                        "reconciled account %s: %d due, %d queries, %d changed%s",
                        self.account,
                        result.looked_at,
                        result.queries,
                        result.changed,
                        "; query budget used up, continuing next sweep" if result.budget_exhausted else "",
                    )
            except Exception as exc:
                log.warning(
                    "reconcile sweep of account %s failed (%r); next one in %.1f s",
                    self.account,
                    exc,
                    interval,
                )

    async def finish_cancel_open(self) -> None:
        """Complete a cancel of this account's open orders that its own kill switch's gateway left
        pending (the switch for every account is the deployment's: listener/process.py)."""
        await finish_overdue_cancel_open(
            self.risk_state,
            self.store,
            cancel_order_push,
            grace_ms=self.settings.risk.cancel_open_grace_ms,
            actor=f"listener {self.holder_id}",
            every_account=False,
        )

    async def _sync_clock(self) -> None:
        offset = await self.exchange.sync_clock()
        log.info("exchange clock offset %d ms (account %s)", offset, self.account)


async def every(period_s: float, job: Callable[[], Awaitable[None]]) -> None:
    """Run `job` now and every `period_s`; a failure is logged and retried after 1 s."""
    while True:
        try:
            await job()
            await asyncio.sleep(period_s)
        except Exception as exc:
            log.warning("%s failed (%r); retrying in 1 s", getattr(job, "__name__", job), exc)
            await asyncio.sleep(1.0)
