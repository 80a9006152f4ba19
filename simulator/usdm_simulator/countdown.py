"""Countdown timers of ``POST /fapi/v1/countdownCancelAll`` (the dead-man switch), per account and symbol.

Each (account, symbol) has at most one timer; arming it again replaces it (that is the heartbeat), arming
it with 0 removes it. When a timer runs out its callback runs once on the event loop (the handler cancels
every open order of the symbol, with the usual ``ORDER_TRADE_UPDATE`` events).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class CountdownTimers:
    """The live timers; ``arm`` must be called from the event loop (every request handler is)."""

    def __init__(self) -> None:
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self.fired: list[tuple[str, str]] = []

    def arm(self, account_key: str, symbol: str, delay_s: float, fire: Callable[[], None]) -> None:
        """(Re)start the timer of (account, symbol): ``fire`` runs after ``delay_s`` unless re-armed."""
        self.disarm(account_key, symbol)
        key = (account_key, symbol)

        def run() -> None:
            self._timers.pop(key, None)
            self.fired.append(key)
            fire()

        self._timers[key] = asyncio.get_running_loop().call_later(delay_s, run)

    def disarm(self, account_key: str, symbol: str) -> None:
        """Stop the timer of (account, symbol), if one runs."""
        handle = self._timers.pop((account_key, symbol), None)
        if handle is not None:
            handle.cancel()

    def armed(self) -> list[tuple[str, str]]:
        """The (account, symbol) pairs with a running timer."""
        return sorted(self._timers)

    def reset(self) -> None:
        """Stop every timer and forget what fired."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self.fired.clear()
