"""The income ledger behind ``GET /fapi/v1/income``: every change to an account's USDT wallet.

Stored entries are the starting deposit (``TRANSFER``, at start and after an admin reset) and funding
settlements (``FUNDING_FEE``). ``REALIZED_PNL`` (non-zero only) and ``COMMISSION`` entries are derived from
the account's fills when queried, so the matching engine needs no hook; their ``tranId`` and ``tradeId``
are the fill's trade id. The ledger sums to the wallet balance: deposit + realised PnL - commission +
funding.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from usdm_simulator.models import Account, fmt

INCOME_TYPES = frozenset({"TRANSFER", "REALIZED_PNL", "FUNDING_FEE", "COMMISSION"})
FIRST_TRAN_ID = 9_000_000_001


@dataclass(frozen=True)
class IncomeEntry:
    """One wallet movement: type, symbol ("" if none), signed USDT amount, time and ids."""

    income_type: str
    symbol: str
    amount: Decimal
    time_ms: int
    tran_id: int
    trade_id: str = ""

    def to_json(self) -> dict[str, Any]:
        """Render as one element of ``GET /fapi/v1/income`` (Binance's field names and string decimals)."""
        return {
            "symbol": self.symbol,
            "incomeType": self.income_type,
            "income": fmt(self.amount, 8),
            "asset": "USDT",
            "info": self.income_type,
            "time": self.time_ms,
            "tranId": self.tran_id,
            "tradeId": self.trade_id,
        }


class IncomeLedger:
    """Stored TRANSFER and FUNDING_FEE entries per account; fills supply the rest on demand."""

    def __init__(self) -> None:
        self._entries: dict[str, list[IncomeEntry]] = {}
        self._ids = itertools.count(FIRST_TRAN_ID)

    def reset(self, accounts: Iterable[Account], now_ms: int) -> None:
        """Forget every entry and record each account's current wallet as a ``TRANSFER`` at ``now_ms``."""
        self._entries = {}
        for account in accounts:
            self.record(account.key, "TRANSFER", "", account.wallet, now_ms)

    def record(
        self, account_key: str, income_type: str, symbol: str, amount: Decimal, time_ms: int
    ) -> IncomeEntry:
        """Append a stored entry (TRANSFER or FUNDING_FEE) and return it."""
        entry = IncomeEntry(income_type, symbol, amount, time_ms, next(self._ids))
        self._entries.setdefault(account_key, []).append(entry)
        return entry

    def entries(self, account: Account) -> list[IncomeEntry]:
        """Every entry of ``account``, stored and derived from its fills, oldest first."""
        out = list(self._entries.get(account.key, ()))
        for trade in account.trades:
            symbol, trade_id = trade.order.symbol, str(trade.trade_id)
            if trade.realized_pnl:
                out.append(
                    IncomeEntry(
                        "REALIZED_PNL", symbol, trade.realized_pnl, trade.time_ms, trade.trade_id, trade_id
                    )
                )
            if trade.commission:
                out.append(
                    IncomeEntry(
                        "COMMISSION", symbol, -trade.commission, trade.time_ms, trade.trade_id, trade_id
                    )
                )
        out.sort(key=lambda e: e.time_ms)
        return out
