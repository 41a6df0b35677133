"""Money: `Decimal` quantised to 0.01 with ROUND_HALF_EVEN ("banker's rounding"), everywhere.

Why half-even: a half cent is rounded up and down equally often, so rounding many shares does not
drift the books in one direction (ROUND_HALF_UP would bias every split towards the larger side).
Why it rarely matters here: a split never rounds twice. `split` rounds one part and gives the
other part the exact remainder, so the parts always add up to the whole to the cent.

Floats never enter: `to_money` refuses them, because 0.1 + 0.2 is not 0.3 in binary.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

CENT = Decimal("0.01")
ZERO = Decimal("0.00")


def to_money(value: Decimal | int | str) -> Decimal:
    """`value` as a Decimal with two places, rounded half-even; floats are refused."""
    if isinstance(value, float):
        raise TypeError("money is never a float; pass a Decimal, an int or a string")
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_EVEN)


# The money columns: max_digits=12, decimal_places=2.
MAX_MONEY = Decimal("9999999999.99")


def money_exact(value: Decimal | int | str, *, field: str) -> Decimal:
    """`value` as money when it already is a non-negative whole number of cents; else ValueError.

    For amounts a client supplies (an entry fee): nothing is rounded, so "0.005" is refused rather
    than silently becoming 0.00. The error names `field`. Floats are refused (TypeError).
    """
    if isinstance(value, float):
        raise TypeError(f"{field}: money is never a float; pass a Decimal, an int or a string")
    try:
        amount = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"{field} {value!r} is not a decimal amount") from None
    if not amount.is_finite():
        raise ValueError(f"{field} {value!r} is not a finite amount")
    if amount != amount.quantize(CENT, rounding=ROUND_HALF_EVEN):
        raise ValueError(f"{field} {value} has more than two decimal places (whole cents only)")
    if amount < ZERO:
        raise ValueError(f"{field} {value} is negative")
    if amount > MAX_MONEY:
        raise ValueError(f"{field} {value} is above the largest amount, {MAX_MONEY}")
    return to_money(amount)


def split(amount: Decimal, *, share_percent: int) -> tuple[Decimal, Decimal]:
    """(share, rest) of `amount`: share = amount * percent / 100 rounded; rest is exact.

    `share + rest == amount` always holds, so splitting never creates or loses a cent.
    """
    if not 0 <= share_percent <= 100:
        raise ValueError(f"share_percent {share_percent} is outside 0..100")
    whole = to_money(amount)
    share = to_money(whole * share_percent / Decimal(100))
    return share, whole - share
