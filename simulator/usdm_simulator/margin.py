"""Margin math of one account in single-asset (USDT) margin: maintenance margin, margin ratio, liquidation
price. Pure: it reads an account and the mark prices and changes nothing.

* **Maintenance margin** of a position = ``notional * maintMarginRatio - cum`` of the leverage bracket
  (``usdm_simulator.brackets``) that holds its notional at the mark price.
* **Isolated wallet** of an isolated position = the margin it was opened with, ``|amount| * entry /
  leverage`` (the simulator keeps one wallet; this is the share Binance would have moved into the position).
  The **cross wallet** is the wallet less every isolated wallet.
* **Margin ratio** = maintenance margin / margin balance: of the cross pool (cross wallet + unrealised PnL
  of the cross positions) and of each isolated position (its isolated wallet + its unrealised PnL).
* **Liquidation price** (``liquidation_price``): the mark price at which the position's pool has margin
  balance = maintenance margin, i.e. Binance's one-way formula
  ``LP = (WB - TMM1 + UPNL1 + cumB - Side1 * Position1 * EP1) / (Position1 * MMR - Side1 * Position1)``
  with WB the cross wallet (cross) or the isolated wallet (isolated; TMM1 = UPNL1 = 0), TMM1/UPNL1 the
  maintenance margin and unrealised PnL of the other cross positions at their current marks, and the
  bracket the one that holds the notional *at the liquidation price* (so MMR and cumB are consistent with
  the answer). In hedge mode, cross, the LONG and SHORT positions of the symbol both move with its price,
  so both enter the equation (Binance's three-position form) and both rows get that one price; isolated,
  each side is its own pool with its own wallet. ``0`` without a position or when the price would be <= 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from usdm_simulator.brackets import BRACKETS, Bracket
from usdm_simulator.models import ZERO, Account

CROSS = "cross"


@dataclass(frozen=True)
class Leg:
    """One open position as the margin math sees it, at ``mark``."""

    symbol: str
    position_side: str
    amount: Decimal  # signed: negative for a short
    entry_price: Decimal
    mark: Decimal
    leverage: int
    isolated: bool

    @property
    def pool(self) -> str | tuple[str, str]:
        """The margin pool it draws on: ``"cross"``, or ``(symbol, position side)`` for an isolated one."""
        return (self.symbol, self.position_side) if self.isolated else CROSS

    @property
    def unrealized(self) -> Decimal:
        """Unrealised PnL at the mark price, USDT."""
        return (self.mark - self.entry_price) * self.amount

    @property
    def maint_margin(self) -> Decimal:
        """Maintenance margin at the mark price, USDT."""
        return maintenance_margin(abs(self.amount) * self.mark)

    @property
    def isolated_wallet(self) -> Decimal:
        """The isolated wallet (``|amount| * entry / leverage``); 0 for a cross position."""
        return abs(self.amount) * self.entry_price / self.leverage if self.isolated else ZERO


def bracket_for(notional: Decimal) -> Bracket:
    """The leverage bracket whose [notionalFloor, notionalCap) holds ``notional`` (the last one above)."""
    for bracket in BRACKETS:
        if notional < bracket.notional_cap:
            return bracket
    return BRACKETS[-1]


def maintenance_margin(notional: Decimal) -> Decimal:
    """Maintenance margin (USDT) of a position of ``notional`` USDT: ``notional * MMR - cum``."""
    bracket = bracket_for(notional)
    return notional * bracket.maint_margin_ratio - bracket.cum


def account_legs(account: Account, prices: Mapping[str, Decimal]) -> list[Leg]:
    """The account's open positions (one-way and hedge-mode alike) at the mark ``prices``."""
    return [
        Leg(
            symbol,
            pos.position_side,
            pos.amount,
            pos.entry_price,
            prices[symbol],
            account.leverage_for(symbol),
            symbol in account.isolated,
        )
        for symbol, pos in account.every_position()
        if pos.amount != 0
    ]


def cross_wallet(account: Account, legs: list[Leg]) -> Decimal:
    """The cross wallet balance: the wallet less the isolated wallets of ``legs``."""
    return account.wallet - sum((leg.isolated_wallet for leg in legs), ZERO)


def pool_margin_balance(account: Account, legs: list[Leg], pool: str | tuple[str, str]) -> Decimal:
    """Margin balance of ``pool``: its wallet (cross or isolated) plus its positions' unrealised PnL."""
    members = [leg for leg in legs if leg.pool == pool]
    wallet = cross_wallet(account, legs) if pool == CROSS else sum((m.isolated_wallet for m in members), ZERO)
    return wallet + sum((m.unrealized for m in members), ZERO)


def margin_ratio(account: Account, legs: list[Leg], pool: str | tuple[str, str]) -> Decimal | None:
    """Maintenance margin / margin balance of ``pool``; ``None`` if it holds no maintenance margin (no
    position), ``Decimal("Infinity")`` if its margin balance is <= 0."""
    maint = sum((leg.maint_margin for leg in legs if leg.pool == pool), ZERO)
    if maint <= 0:
        return None
    balance = pool_margin_balance(account, legs, pool)
    return maint / balance if balance > 0 else Decimal("Infinity")


def liquidation_price(account: Account, legs: list[Leg], leg: Leg) -> Decimal:
    """The mark price of ``leg.symbol`` at which ``leg``'s pool reaches margin balance = maintenance margin
    (see the module docstring); 0 if there is none above 0."""
    if leg.isolated:
        movers, base = [leg], leg.isolated_wallet
    else:
        movers = [m for m in legs if not m.isolated and m.symbol == leg.symbol]
        others = [m for m in legs if not m.isolated and m.symbol != leg.symbol]
        base = cross_wallet(account, legs) + sum((m.unrealized - m.maint_margin for m in others), ZERO)
    roots = [p for p in _roots(movers, base) if p > 0]
    if not roots:
        return ZERO
    return min(roots, key=lambda p: abs(p - leg.mark))


def _roots(movers: list[Leg], base: Decimal) -> list[Decimal]:
    """Prices P with ``base + Σ amount * (P - entry) = Σ maintenance_margin(|amount| * P)``.

    Both sides are linear in P between the prices where a mover's notional crosses a bracket floor; in
    each such segment the root is Binance's formula with that segment's MMR and cum.
    """
    edges = sorted({Decimal(b.notional_floor) / abs(m.amount) for m in movers for b in BRACKETS[1:]})
    bounds = [ZERO, *edges]
    roots = []
    for i, low in enumerate(bounds):
        high = bounds[i + 1] if i + 1 < len(bounds) else None
        probe = (low + high) / 2 if high is not None else low + 1
        constant, slope = base, ZERO
        for m in movers:
            bracket = bracket_for(abs(m.amount) * probe)
            constant += bracket.cum - m.amount * m.entry_price
            slope += m.amount - abs(m.amount) * bracket.maint_margin_ratio
        if slope == 0:
            continue
        root = -constant / slope
        if low <= root and (high is None or root < high):
            roots.append(root)
    return roots
