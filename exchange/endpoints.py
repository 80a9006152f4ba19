"""Every REST endpoint of the exchange client, in one table: what a request costs, how urgent it
is, which circuit breaker it passes, and the `endpoint` label its metrics carry.

`SignedRest` spends each request's cost from the shared budget at its priority and sends it
through its breaker group; exchange/metrics.py takes its bounded label values from here. A
new endpoint of the client gets its row in `TABLE` (tests/unit/test_exchange_endpoints.py
fails for a call without one).
"""

from __future__ import annotations

from dataclasses import dataclass

from order_execution.exchange.breakers import Group
from order_execution.exchange.rate_budget import Cost, Priority


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One REST endpoint: `cost` in Binance's weights and order counts, the `priority` it waits
    for the shared budget at, and its breaker `group` (None: it passes no breaker)."""

    method: str
    path: str
    cost: Cost
    priority: Priority
    group: Group | None

    @property
    def label(self) -> str:
        """The `endpoint` label value of its metrics: `"<METHOD> <path>"`."""
        return f"{self.method} {self.path}"


_ORDER = Cost(weight=0, orders=1)
_ONE = Cost(weight=1)

TABLE: tuple[Endpoint, ...] = (
    # orders
    Endpoint("POST", "/fapi/v1/order", _ORDER, Priority.CREATE, Group.CREATE),
    Endpoint("PUT", "/fapi/v1/order", _ORDER, Priority.CREATE, Group.CREATE),
    Endpoint("DELETE", "/fapi/v1/order", _ONE, Priority.CANCEL, Group.CANCEL),
    Endpoint("GET", "/fapi/v1/order", _ONE, Priority.QUERY, Group.QUERY),
    Endpoint("GET", "/fapi/v1/openOrders", Cost(weight=40), Priority.QUERY, Group.QUERY),
    Endpoint("GET", "/fapi/v1/userTrades", Cost(weight=5), Priority.QUERY, Group.QUERY),
    Endpoint("DELETE", "/fapi/v1/allOpenOrders", _ONE, Priority.CANCEL, Group.CANCEL),
    # conditional (algo) orders
    Endpoint("POST", "/fapi/v1/algoOrder", _ORDER, Priority.CREATE, Group.CREATE),
    Endpoint("DELETE", "/fapi/v1/algoOrder", _ONE, Priority.CANCEL, Group.CANCEL),
    Endpoint("GET", "/fapi/v1/algoOrder", _ONE, Priority.QUERY, Group.QUERY),
    Endpoint("GET", "/fapi/v1/openAlgoOrders", Cost(weight=40), Priority.QUERY, Group.QUERY),
    Endpoint("DELETE", "/fapi/v1/algoOpenOrders", _ONE, Priority.CANCEL, Group.CANCEL),
    # account settings and the dead-man switch (positionRisk: Binance says 5; we budget 10)
    Endpoint("GET", "/fapi/v1/positionSide/dual", Cost(weight=30), Priority.QUERY, Group.QUERY),
    Endpoint("GET", "/fapi/v2/positionRisk", Cost(weight=10), Priority.QUERY, Group.QUERY),
    Endpoint("POST", "/fapi/v1/leverage", _ONE, Priority.QUERY, None),
    Endpoint("POST", "/fapi/v1/marginType", _ONE, Priority.QUERY, None),
    Endpoint("POST", "/fapi/v1/countdownCancelAll", Cost(weight=10), Priority.CANCEL, None),
    # market data and the clock (unsigned)
    Endpoint("GET", "/fapi/v1/time", _ONE, Priority.QUERY, None),
    Endpoint("GET", "/fapi/v1/exchangeInfo", _ONE, Priority.QUERY, None),
    Endpoint("GET", "/fapi/v1/premiumIndex", _ONE, Priority.QUERY, None),
    # the user-data stream's key
    Endpoint("POST", "/fapi/v1/listenKey", _ONE, Priority.QUERY, None),
    Endpoint("PUT", "/fapi/v1/listenKey", _ONE, Priority.QUERY, None),
    # Not called by the client (the gateway's health check pings on its own session, and a key
    # is left to lapse rather than closed); kept because their label values (series at 0) have
    # been served from the start and dashboards may name them.
    Endpoint("GET", "/fapi/v1/ping", _ONE, Priority.QUERY, None),
    Endpoint("DELETE", "/fapi/v1/listenKey", _ONE, Priority.QUERY, None),
)

# A request to an endpoint missing from the table: weight 1, no breaker, counted as "other".
UNLISTED = Endpoint("", "", _ONE, Priority.QUERY, None)

_BY_REQUEST = {(endpoint.method, endpoint.path): endpoint for endpoint in TABLE}


def lookup(method: str, path: str) -> Endpoint:
    """The table's row for `method` and `path` (no query string), else `UNLISTED`."""
    return _BY_REQUEST.get((method, path), UNLISTED)
