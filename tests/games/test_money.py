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
