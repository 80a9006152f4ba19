"""What pre-trade risk needs from the exchange, kept current in Redis by the leading listener.

* Mark prices: GET /fapi/v1/premiumIndex every `risk.mark_price_poll_ms` (weight 1),
  each stored with the time it was read; the gateway refuses to price a MARKET order
  with one older than `risk.mark_price_max_age_ms`.
* Positions: GET /fapi/v2/positionRisk when the listener starts leading and every
  `risk.position_refresh_s`, and each ACCOUNT_UPDATE in between (it carries only the
  positions that changed). The stored amount is the net of the symbol's position sides
  (one-way mode has one, BOTH; hedge mode LONG and SHORT). ACCOUNT_UPDATEs are noted at
  once and written in batches (`note_account_update`, `flush_positions`): an account that
  fills hundreds of orders a second gets one write per round trip, not one per fill.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal, InvalidOperation
from typing import Any

from order_execution.exchange.client import BinanceClient
from order_execution.orders.model import now_ms
from order_execution.orders.risk_state import RiskState

log = logging.getLogger(__name__)


class RiskFeeds:
    """Mark prices and positions into `orders.risk_state` (see the module docstring)."""

    def __init__(self, state: RiskState, exchange: BinanceClient, *, symbols: list[str]) -> None:
        self._state = state
        self._exchange = exchange
        self._symbols = frozenset(symbols)
        self._sides: dict[tuple[str, str], Decimal] = {}  # (symbol, positionSide) -> amount
        self._unwritten: set[str] = set()  # symbols whose position changed since the last write

    async def poll_marks(self) -> None:
        """Read every configured symbol's mark price once and store it."""
        rows = await self._exchange.premium_index()
        marks = {
            str(row["symbol"]): Decimal(str(row["markPrice"]))
            for row in rows
            if not self._symbols or row.get("symbol") in self._symbols
        }
        await self._state.save_marks(marks, time_ms=now_ms())

    async def refresh_positions(self) -> None:
        """Replace the stored positions with the exchange's positionRisk."""
        rows = await self._exchange.position_risk()
        sides: dict[tuple[str, str], Decimal] = {}
        for row in rows:
            key = (str(row["symbol"]), str(row.get("positionSide", "BOTH")))
            sides[key] = Decimal(str(row["positionAmt"]))
        self._sides = sides
        await self._state.set_positions(_net(sides, {s for s, _ in sides}), replace=True)

    def note_account_update(self, payload: dict[str, Any]) -> bool:
        """Note an ACCOUNT_UPDATE's changed positions (`a.P[]`: s, pa, ps) for the next
        `flush_positions`; True if any changed. A malformed one is logged and changes nothing."""
        try:
            changed = [
                (str(p["s"]), str(p.get("ps", "BOTH")), Decimal(str(p["pa"])))
                for p in payload.get("a", {}).get("P", [])
            ]
        except (KeyError, TypeError, InvalidOperation) as exc:
            log.error("ACCOUNT_UPDATE with a malformed position (%r): %.300s", exc, payload)
            return False
        for symbol, side, amount in changed:
            self._sides[(symbol, side)] = amount
            self._unwritten.add(symbol)
        return bool(changed)

    async def flush_positions(self) -> None:
        """Store every position noted since the last flush, in one write (none if nothing changed).

        A failed write keeps them noted, for the next flush or the periodic refresh.
        """
        if not self._unwritten:
            return
        symbols, self._unwritten = self._unwritten, set()
        try:
            await self._state.set_positions(_net(self._sides, symbols))
        except BaseException:
            self._unwritten |= symbols
            raise

    async def run_marks(self, period_s: float) -> None:
        """Poll mark prices every `period_s` until cancelled; a failure is logged and retried."""
        while True:
            try:
                await self.poll_marks()
            except Exception as exc:
                log.warning("polling mark prices failed (%r); retrying", exc)
            await asyncio.sleep(period_s)

    async def run_positions(self, period_s: float) -> None:
        """Re-read positionRisk now and every `period_s` until cancelled (1 s after a failure)."""
        while True:
            try:
                await self.refresh_positions()
                await asyncio.sleep(period_s)
            except Exception as exc:
                log.warning("reading positions failed (%r); retrying in 1 s", exc)
                await asyncio.sleep(1.0)


def _net(sides: dict[tuple[str, str], Decimal], symbols: set[str]) -> dict[str, Decimal]:
    """Net position per symbol among `symbols`: the sum over its position sides."""
    net = {symbol: Decimal(0) for symbol in symbols}
    for (symbol, _), amount in sides.items():
        if symbol in net:
            net[symbol] += amount
    return net
