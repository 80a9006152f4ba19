"""The dead-man switch: keep the exchange's countdownCancelAll armed while this service lives.

A switch serves one exchange account (the countdowns are per account at the exchange): the
listener leading that account calls `DeadManSwitch.beat` every `dead_man.interval_s`. A beat reads
which symbols have orders of that account that are not final (the store's unsettled index, which
holds every account's orders, filtered by `Order.account`) and arms each symbol's countdown
for `dead_man.countdown_ms` (POST /fapi/v1/countdownCancelAll, weight 10, spent from the shared rate
budget like any request). A symbol armed by the previous beat that has no open order any more is
disarmed (countdownTime 0); with no open order anywhere a beat sends nothing. If the service dies (or
stops leading and nobody takes over), the beats stop and the exchange cancels every resting order of
the armed symbols when the countdown runs out.

Stepping down leaves the timers armed: the next leader re-arms what is still open, and if none comes
the exchange cancels the orders, which is the point.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from order_execution.orders.fsm import FINAL_STATES
from order_execution.orders.model import DEFAULT_ACCOUNT
from order_execution.orders.store import OrderStore

log = logging.getLogger(__name__)

_PAGE = 500


class CountdownExchange(Protocol):
    """The one exchange call the switch needs (exchange.client.BinanceClient has it)."""

    async def countdown_cancel_all(self, symbol: str, countdown_ms: int) -> None: ...


class DeadManSwitch:
    """Arms, re-arms and disarms `account`'s per-symbol cancel-all countdowns through that
    account's client `exchange` (see the module)."""

    def __init__(
        self,
        store: OrderStore,
        exchange: CountdownExchange,
        *,
        countdown_ms: int,
        account: str = DEFAULT_ACCOUNT,
    ) -> None:
        self._store = store
        self._exchange = exchange
        self.account = account
        self._countdown_ms = countdown_ms
        self.armed: set[str] = set()
        self.beats = 0

    async def open_symbols(self) -> set[str]:
        """Symbols with at least one order of the account that is not final (sent or about to be)."""
        symbols: set[str] = set()
        after: tuple[int, str] | None = None
        while True:
            ids = await self._store.unsettled(after=after, limit=_PAGE)
            if not ids:
                return symbols
            orders = await self._store.get_many(ids)
            symbols.update(
                o.symbol for o in orders if o.account == self.account and o.state not in FINAL_STATES
            )
            if len(ids) < _PAGE or not orders:
                return symbols
            last = orders[-1]
            after = (last.created_at, last.order_id)

    async def beat(self) -> None:
        """One heartbeat: arm every symbol with open orders, disarm those that no longer have any.

        A failed call (rate budget, exchange down) raises after the symbols before it were handled; the
        symbol stays in `armed` (to be disarmed later) only once an arm call for it has gone through.
        """
        symbols = await self.open_symbols()
        for symbol in sorted(symbols):
            await self._exchange.countdown_cancel_all(symbol, self._countdown_ms)
            self.armed.add(symbol)
        for symbol in sorted(self.armed - symbols):
            await self._exchange.countdown_cancel_all(symbol, 0)
            self.armed.discard(symbol)
        self.beats += 1

    async def run(self, interval_s: float) -> None:
        """Beat now and every `interval_s` until cancelled; a failed beat is logged and retried in 1 s."""
        while True:
            try:
                await self.beat()
                await asyncio.sleep(interval_s)
            except Exception as exc:
                log.warning("dead-man switch heartbeat failed (%r); retrying in 1 s", exc)
                await asyncio.sleep(min(1.0, interval_s))
