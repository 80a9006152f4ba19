"""What the exchange said, classified once, at the client boundary.

The worker's decisions hang on one question: did the exchange take the order?
* `OrderRejected`, `OrderNotFoundAtExchange`, `UnknownOrder`: definite answers.
* `NotExecuted` (and its kinds `RateLimited`, `ExchangeUnavailable`, `ClockSkew`): the
  request was refused before execution; repeating it is safe.
* `OutcomeUnknown`: it may or may not have happened (timeout, dropped connection,
  5xx, -1006, -1007, 503 "Unknown error"); never re-POST, reconcile instead.
Each keeps the underlying cause (`raise ... from`). The last two kinds are `transient` (a
repeat, or a query later, may settle it); the definite answers are not.
"""

from __future__ import annotations

from order_execution.orders.errors import OrderServiceError


class ExchangeError(OrderServiceError):
    """Root of the exchange client's errors. `code` is Binance's error code, if any."""

    def __init__(self, message: str, *, code: int | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class OrderRejected(ExchangeError):
    """A business rejection (filters, margin, post-only would cross...): not executed, final."""


class DuplicateClientOrderId(ExchangeError):
    """-4116: an open order already has this client id, so an earlier send went through."""


class UnknownOrder(ExchangeError):
    """-2011 on cancel: the order is not open at the exchange (filled, canceled or never there)."""


class OrderNotFoundAtExchange(ExchangeError):
    """-2013 on query: the exchange has no such order (yet, or any more)."""


class NotExecuted(ExchangeError):
    """Refused before execution; the same request may be sent again later."""

    transient = True


class RateLimited(NotExecuted):
    """429 or 418. `retry_after_s` says when the exchange will listen again."""

    def __init__(self, message: str, *, retry_after_s: float, code: int | None, status: int) -> None:
        super().__init__(message, code=code, status=status)
        self.retry_after_s = retry_after_s


class ExchangeUnavailable(NotExecuted):
    """Could not connect, -1008 overload, 503 "Service Unavailable.", a WAF 403."""


class ClockSkew(NotExecuted):
    """-1021: our timestamp is outside recvWindow; resync the clock and resend."""


class OutcomeUnknown(ExchangeError):
    """The request may have been executed; only a query or the user stream can tell."""

    transient = True


class CircuitOpen(NotExecuted):
    """The endpoint group's circuit breaker is open: nothing was sent."""

    def __init__(self, message: str, *, group: str) -> None:
        super().__init__(message)
        self.group = group


class BudgetExceeded(NotExecuted):
    """The shared rate budget could not serve the request before its deadline: nothing was sent."""

    def __init__(self, message: str, *, wait_ms: int) -> None:
        super().__init__(message)
        self.wait_ms = wait_ms
