"""Notional and leverage brackets (``GET /fapi/v1/leverageBracket``): one tier table for every symbol.

A bracket caps the position notional allowed at leverages up to its ``initialLeverage``; the tiers and
maintenance ratios follow Binance's BTCUSDT table, ``cum`` (the maintenance-amount shortcut) derived from
them as Binance does: ``cum[n] = cum[n-1] + floor[n] * (mmr[n] - mmr[n-1])``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

MAX_LEVERAGE = 125

# (initialLeverage, notionalCap, maintMarginRatio), lowest notional first.
_TIERS: tuple[tuple[int, int, str], ...] = (
    (125, 50_000, "0.004"),
    (100, 600_000, "0.005"),
    (75, 3_000_000, "0.0065"),
    (50, 12_000_000, "0.01"),
    (25, 70_000_000, "0.02"),
    (20, 100_000_000, "0.025"),
    (10, 230_000_000, "0.05"),
    (5, 480_000_000, "0.1"),
    (4, 600_000_000, "0.125"),
    (3, 800_000_000, "0.15"),
    (2, 1_200_000_000, "0.25"),
    (1, 1_800_000_000, "0.5"),
)


@dataclass(frozen=True)
class Bracket:
    """One tier: leverage allowed up to ``initial_leverage`` for notionals in [floor, cap)."""

    number: int
    initial_leverage: int
    notional_floor: int
    notional_cap: int
    maint_margin_ratio: Decimal
    cum: Decimal

    def to_json(self) -> dict[str, Any]:
        """Binance's bracket object (numbers, not strings, as the endpoint sends them)."""
        return {
            "bracket": self.number,
            "initialLeverage": self.initial_leverage,
            "notionalCap": self.notional_cap,
            "notionalFloor": self.notional_floor,
            "maintMarginRatio": float(self.maint_margin_ratio),
            "cum": float(self.cum),
        }


def _build() -> tuple[Bracket, ...]:
    brackets: list[Bracket] = []
    floor, cum, previous_ratio = 0, Decimal(0), Decimal(0)
    for number, (leverage, cap, ratio_text) in enumerate(_TIERS, start=1):
        ratio = Decimal(ratio_text)
        cum += floor * (ratio - previous_ratio)
        brackets.append(Bracket(number, leverage, floor, cap, ratio, cum))
        floor, previous_ratio = cap, ratio
    return tuple(brackets)


BRACKETS = _build()


def max_notional(leverage: int) -> int:
    """The largest position notional (USDT) allowed at ``leverage`` (1..125)."""
    return max(b.notional_cap for b in BRACKETS if b.initial_leverage >= leverage)


def symbol_brackets(symbol: str) -> dict[str, Any]:
    """The ``leverageBracket`` element of ``symbol``."""
    return {"symbol": symbol, "brackets": [b.to_json() for b in BRACKETS]}
