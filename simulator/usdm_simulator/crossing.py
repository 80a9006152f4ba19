"""Which makers a taker order meets in book mode, in the order it meets them.

The opposite side of the book is the outside market's levels (``usdm_simulator.liquidity``) merged with our
accounts' resting orders. A taker meets them best price first; at one price the market's quantity comes
first (it was there before any of ours), then our resting orders oldest first. The walk stops at the
taker's limit price.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal

from usdm_simulator.book import Level
from usdm_simulator.models import Order


@dataclass(frozen=True, slots=True)
class Maker:
    """One thing a taker can trade with: a market level (``order`` None) or one of our resting orders."""

    price: Decimal
    qty: Decimal
    order: Order | None = None


def makers(
    taker_side: str, market: Iterable[Level], resting: Iterable[Order], limit: Decimal | None
) -> Iterator[Maker]:
    """The makers a ``taker_side`` order meets, best price first, up to ``limit`` (None: no limit).

    ``market`` is the opposite side's levels best first; ``resting`` our opposite-side open orders in any
    order. Quantities are as they stand when each maker is yielded, so a caller may fill between steps.
    """
    buying = taker_side == "BUY"
    sign = 1 if buying else -1
    ours = sorted(resting, key=lambda o: (sign * o.price, o.order_id))
    # Sort key: price from the taker's best to worst, market (0) before our orders (1), then time.
    market_keyed = ((sign * price, 0, 0, Maker(price, qty)) for price, qty in market)
    ours_keyed = ((sign * o.price, 1, o.order_id, Maker(o.price, o.remaining, o)) for o in ours)
    for key, _, _, maker in heapq.merge(market_keyed, ours_keyed, key=lambda item: item[:3]):
        if limit is not None and key > sign * limit:
            return
        if maker.order is not None:
            if not maker.order.is_open:
                continue
            maker = Maker(maker.price, maker.order.remaining, maker.order)
        yield maker


def fillable_qty(met: Iterable[Maker], wanted: Decimal) -> Decimal:
    """How much of ``wanted`` the makers ``met`` could fill (stops counting once it is enough)."""
    total = Decimal(0)
    for maker in met:
        total += maker.qty
        if total >= wanted:
            return wanted
    return total
