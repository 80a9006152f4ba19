"""Fetch the exchange's trading rules and share them through Redis."""

from __future__ import annotations

import logging
from decimal import InvalidOperation

from order_execution.exchange.client import BinanceClient
from order_execution.exchange.rate_budget import ExchangeLimits
from order_execution.orders.rules import SymbolRules
from order_execution.orders.rules_store import RulesStore

log = logging.getLogger(__name__)


async def refresh_rules(exchange: BinanceClient, rules: RulesStore, symbols: list[str]) -> list[str]:
    """Fetch exchangeInfo and store the rules of `symbols` and the rate limits; returns the symbols stored.

    A configured symbol the exchange does not list is logged and skipped. The account's
    rate limits (`rateLimits`) go to the shared budget, for every replica and the gateways.
    """
    info = await exchange.exchange_info()
    if exchange.budget is not None and info.get("rateLimits"):
        await exchange.budget.save_limits(ExchangeLimits.from_exchange_info(info["rateLimits"]))
    wanted = set(symbols)
    parsed: list[SymbolRules] = []
    for entry in info.get("symbols", []):
        if entry.get("symbol") not in wanted:
            continue
        try:
            parsed.append(SymbolRules.from_exchange_info(entry))
        except (KeyError, InvalidOperation) as exc:
            log.error("exchangeInfo for %s is malformed (%r); keeping the old rules", entry["symbol"], exc)
    missing = wanted - {r.symbol for r in parsed}
    if missing:
        log.warning("the exchange does not list %s; orders for them will be refused", sorted(missing))
    await rules.save(parsed)
    return sorted(r.symbol for r in parsed)
