"""Funding every 8 hours of simulated time (00:00, 08:00 and 16:00 UTC), as Binance settles perpetuals.

At each funding time, for every open position (one-way and hedge-mode alike) the account is charged
``position amount * mark price * funding rate``: with a positive rate longs pay and shorts receive, with a
negative one the reverse. The fee (rounded to 8 decimals) moves the USDT wallet, is recorded as a
``FUNDING_FEE`` income entry, and is pushed as an ``ACCOUNT_UPDATE`` with reason ``FUNDING_FEE`` (the
balance only in cross margin; the balance and that position in isolated margin, as Binance sends it).

Rates are per symbol (default ``DEFAULT_FUNDING_RATE``, 0.01 %), settable through ``POST /admin/funding``;
``GET /fapi/v1/premiumIndex`` reports them as ``lastFundingRate`` with the next funding time.
If simulated time jumps over several funding times, each one is settled in turn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from usdm_simulator.clock import ExchangeClock
from usdm_simulator.events import funding_update
from usdm_simulator.income import IncomeLedger
from usdm_simulator.matching import MatchingEngine

FUNDING_INTERVAL_MS = 8 * 3600 * 1000
DEFAULT_FUNDING_RATE = Decimal("0.0001")
_FEE_QUANT = Decimal("0.00000001")

EventSink = Callable[[str, dict[str, Any]], None]


def next_funding_ms(now_ms: int) -> int:
    """The first funding time (a multiple of 8 h since the epoch, i.e. 00/08/16 UTC) after ``now_ms``."""
    return now_ms - now_ms % FUNDING_INTERVAL_MS + FUNDING_INTERVAL_MS


@dataclass(frozen=True)
class FundingSettlement:
    """One symbol's funding at one funding time: the rate and the mark price it was charged at."""

    symbol: str
    rate: Decimal
    mark_price: Decimal
    time_ms: int


class FundingSchedule:
    """Funding rates per symbol, the time of the last settlement, and the settlements done so far."""

    def __init__(
        self, clock: ExchangeClock, engine: MatchingEngine, income: IncomeLedger, sink: EventSink
    ) -> None:
        self._clock = clock
        self._engine = engine
        self._income = income
        self._sink = sink
        self.rates: dict[str, Decimal] = {}
        self.history: list[FundingSettlement] = []
        self.reset()

    def reset(self) -> None:
        """All rates back to the default, no settlements; the next funding time is the next 8 h mark."""
        self.rates = {s: DEFAULT_FUNDING_RATE for s in self._engine.specs}
        self.history = []
        now = self._clock.sim_ms()
        self._last_ms = now - now % FUNDING_INTERVAL_MS

    @property
    def next_funding_ms(self) -> int:
        """Unix ms of the next funding time."""
        return self._last_ms + FUNDING_INTERVAL_MS

    def set_rate(self, symbol: str, rate: Decimal) -> None:
        """Set ``symbol``'s funding rate (a fraction per 8 h, e.g. 0.0001); KeyError for an unknown symbol."""
        if symbol not in self._engine.specs:
            raise KeyError(symbol)
        self.rates[symbol] = rate

    def settle_due(self) -> int:
        """Settle every funding time that simulated time has reached; return how many were settled."""
        settled = 0
        while self.next_funding_ms <= self._clock.sim_ms():
            self._last_ms = self.next_funding_ms
            self._settle(self._last_ms)
            settled += 1
        return settled

    def _settle(self, at_ms: int) -> None:
        engine = self._engine
        for symbol in engine.specs:
            self.history.append(FundingSettlement(symbol, self.rates[symbol], engine.prices[symbol], at_ms))
        for account in engine.accounts.values():
            for symbol, position in account.every_position():
                if position.amount == 0:
                    continue
                mark = engine.prices[symbol]
                fee = (-position.amount * mark * self.rates[symbol]).quantize(_FEE_QUANT, ROUND_HALF_EVEN)
                if fee == 0:
                    continue
                account.wallet += fee
                self._income.record(account.key, "FUNDING_FEE", symbol, fee, at_ms)
                isolated = symbol in account.isolated
                event = funding_update(
                    account,
                    symbol,
                    position,
                    engine.prices,
                    fee,
                    self._clock.now_ms(),
                    with_position=isolated,
                )
                self._sink(account.key, event)
