"""The exchange clock: wall time in milliseconds plus an adjustable offset (the clock-offset fault)."""

from __future__ import annotations

import time


class ExchangeClock:
    """Server time as Binance reports it; ``offset_ms`` shifts it to simulate a skewed exchange clock."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def now_ms(self) -> int:
        """Return the exchange's current time in Unix milliseconds."""
        return time.time_ns() // 1_000_000 + self.offset_ms
