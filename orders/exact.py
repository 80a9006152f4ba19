"""Exact Decimal arithmetic on order terms: a result that would need rounding is refused, never rounded.

Python's default decimal context keeps 28 significant digits and rounds silently beyond
them, so with it `price - minPrice` of a 40-digit price lost its last digit and an
off-tick price passed the tick check. Every computation on a request's decimals goes
through `EXACT` instead: wide enough for any accepted input (request decimals are at most
40 characters, the exchange's filters a few digits, so a difference, product or integer
quotient needs well under 100 digits), with the Inexact and Rounded traps on, so a result
that does not fit is an error naming the field rather than a different number.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DecimalException,
    DivisionByZero,
    FloatOperation,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
    Subnormal,
    Underflow,
    localcontext,
)

from order_execution.orders.errors import InvalidOrder

EXACT_DIGITS = 200
EXACT = Context(
    prec=EXACT_DIGITS,
    rounding=ROUND_HALF_EVEN,
    traps=[
        Inexact,
        Rounded,
        InvalidOperation,
        DivisionByZero,
        Overflow,
        Underflow,
        Subnormal,
        FloatOperation,
    ],
)
_ZERO = Decimal(0)


@contextmanager
def exactly(field: str) -> Iterator[None]:
    """Run the block's Decimal arithmetic in `EXACT`; any rounding or invalid operation in it
    raises InvalidOrder naming `field` instead of producing a different number."""
    with localcontext(EXACT):
        try:
            yield
        except DecimalException as exc:
            raise InvalidOrder(
                field,
                f"cannot be checked exactly ({type(exc).__name__} within {EXACT_DIGITS} significant digits)",
            ) from exc


def product(field: str, left: Decimal, right: Decimal) -> Decimal:
    """`left` x `right`, exact; raises InvalidOrder naming `field` if it cannot be."""
    with exactly(field):
        return left * right


def is_multiple(field: str, value: Decimal, step: Decimal, base: Decimal = _ZERO) -> bool:
    """Whether `value - base` is a whole number of `step`s, computed exactly (`step` > 0).

    Raises InvalidOrder naming `field` if the arithmetic cannot be exact.
    """
    with exactly(field):
        return (value - base) % step == 0
