from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from games.money import split, to_money


def test_money_rounds_half_to_even():
    assert to_money("0.005") == Decimal("0.00")
    assert to_money("0.015") == Decimal("0.02")
    assert to_money("2.675") == Decimal("2.68")


def test_money_refuses_floats():
    with pytest.raises(TypeError):
        to_money(0.1)  # type: ignore[arg-type]


@given(
    cents=st.integers(min_value=0, max_value=10**12),
    share=st.integers(min_value=0, max_value=100),
)
def test_a_split_never_creates_or_loses_a_cent(cents, share):
    amount = Decimal(cents) / 100
    part, rest = split(amount, share_percent=share)
    assert part + rest == amount
    assert part >= 0
    assert rest >= 0


def test_exact_money_is_never_rounded():
    from games.money import money_exact

    assert money_exact("1.5", field="fee") == Decimal("1.50")
    assert money_exact("1.100", field="fee") == Decimal("1.10")  # exact cents, written long
    with pytest.raises(ValueError, match=r"^fee 0\.005 has more than two decimal places"):
        money_exact("0.005", field="fee")
    with pytest.raises(ValueError, match=r"fee -0\.01 is negative"):
        money_exact("-0.01", field="fee")
    with pytest.raises(ValueError, match="largest amount"):
        money_exact("10000000000", field="fee")
    with pytest.raises(TypeError, match="fee"):
        money_exact(0.5, field="fee")  # type: ignore[arg-type]
