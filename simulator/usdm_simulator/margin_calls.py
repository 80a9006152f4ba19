"""``MARGIN_CALL`` on the user-data stream when a margin pool's ratio reaches the margin-call threshold.

After every reference-price change (``MatchingEngine.price_listeners``), each account holding a position
(or under a margin call) has the margin ratio (maintenance margin / margin balance, ``usdm_simulator.margin``)
of its cross pool and of each isolated position checked. A pool whose ratio reaches ``MARGIN_CALL_RATIO``
gets one ``MARGIN_CALL`` listing its positions (``cw`` only when the cross pool is among them, as Binance
sends it); it is not called again until its ratio has fallen back below the threshold (or its positions
closed) and reached it anew. Several pools crossing on one price change share one event. Positions are not
liquidated: the simulator only warns.

The threshold is not in our Binance reference notes; 80 % is the value assumed here.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from usdm_simulator.clock import ExchangeClock
from usdm_simulator.events import margin_call
from usdm_simulator.margin import CROSS, account_legs, cross_wallet, margin_ratio
from usdm_simulator.matching import MatchingEngine

MARGIN_CALL_RATIO = Decimal("0.8")

EventSink = Callable[[str, dict[str, Any]], None]
Pool = str | tuple[str, str]


class MarginCalls:
    """Which margin pools of which accounts are under a margin call, and the price listener that sends
    ``MARGIN_CALL`` when one enters it."""

    def __init__(self, engine: MatchingEngine, clock: ExchangeClock, sink: EventSink) -> None:
        """``sink`` receives (account key, event), as ``UserStreams.publish``."""
        self._engine = engine
        self._clock = clock
        self._sink = sink
        self._called: dict[str, set[Pool]] = {}

    def reset(self) -> None:
        """Forget every margin call (after ``POST /admin/reset``)."""
        self._called.clear()

    def on_price(self, symbol: str, price: Decimal) -> None:
        """Check every account with a position or a standing call; push ``MARGIN_CALL`` for pools that
        have just reached the threshold."""
        for account in self._engine.accounts.values():
            called = self._called.get(account.key, set())
            legs = account_legs(account, self._engine.prices)
            if not legs and not called:
                continue
            above = {
                leg.pool
                for leg in legs
                if (ratio := margin_ratio(account, legs, leg.pool)) is not None and ratio >= MARGIN_CALL_RATIO
            }
            fresh = above - called
            self._called[account.key] = above
            if fresh:
                cw = cross_wallet(account, legs) if CROSS in fresh else None
                called_legs = [leg for leg in legs if leg.pool in fresh]
                self._sink(account.key, margin_call(called_legs, cw, self._clock.now_ms()))
