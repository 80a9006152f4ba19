"""Market stream names the simulator serves, parsed into subscriptions (``<symbol>@<kind>[@<speed>]``).

Names (symbol in lower case): ``<s>@aggTrade``, ``<s>@trade``, ``<s>@depth[@100ms|250ms|500ms]``,
``<s>@depth5|10|20[@speed]``, ``<s>@bookTicker``, ``<s>@markPrice[@1s]``, ``<s>@kline_<interval>``,
``<s>@ticker``, ``<s>@miniTicker``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from usdm_simulator import errors
from usdm_simulator.klines import INTERVALS
from usdm_simulator.symbols import SymbolSpec

_NAME = re.compile(
    r"^(?P<sym>[a-z0-9]+)@(?:(?P<agg>aggTrade)|(?P<trade>trade)|(?P<bt>bookTicker)"
    r"|depth(?P<levels>5|10|20)?(?:@(?P<speed>100|250|500)ms)?|markPrice(?P<mark1s>@1s)?"
    r"|kline_(?P<interval>\w+)|(?P<ticker>ticker|miniTicker))$"
)


@dataclass(eq=False)
class StreamSub:
    """One subscribed stream of one connection, with the state its timed events need."""

    name: str
    spec: SymbolSpec
    kind: str
    period_ms: int = 0
    levels: int = 0
    interval: str = ""
    last_ms: int = 0
    last_u: int = -1
    last_key: Any = None


def parse_stream(name: str, specs: dict[str, SymbolSpec]) -> StreamSub:
    """The subscription for stream ``name``.

    Raises BinanceError -1130 for a name the simulator does not serve, -1121 for an unknown symbol.
    """
    m = _NAME.fullmatch(name)  # `match` with `$` would take a trailing newline
    if m is None:
        raise errors.invalid_parameter("streams")
    spec = specs.get(m["sym"].upper())
    if spec is None:
        raise errors.error(errors.BAD_SYMBOL)
    if m["agg"]:
        return StreamSub(name, spec, "aggTrade")
    if m["trade"]:
        return StreamSub(name, spec, "trade")
    if m["bt"]:
        return StreamSub(name, spec, "bookTicker", period_ms=100)
    if m["ticker"]:  # Binance pushes both every 2 s
        return StreamSub(name, spec, m["ticker"], period_ms=2000)
    if m["interval"]:
        if m["interval"] not in INTERVALS:
            raise errors.invalid_parameter("streams")
        return StreamSub(name, spec, "kline", period_ms=250, interval=m["interval"])
    if name.split("@", 1)[1].startswith("markPrice"):
        return StreamSub(name, spec, "markPrice", period_ms=1000 if m["mark1s"] else 3000)
    speed = int(m["speed"] or 250)
    levels = int(m["levels"] or 0)
    return StreamSub(name, spec, "partialDepth" if levels else "depth", period_ms=speed, levels=levels)


def path_streams(tail: str) -> list[str]:
    """Stream names in a ``/ws/<a>/<b>`` path tail; all-digit segments (a client's connection tag, as
    ccxt appends ``/0``) and empty segments are dropped."""
    return [n for n in tail.split("/") if n and not n.isdigit()]
