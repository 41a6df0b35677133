import pytest

from core.backoff import backoff


def test_the_wait_doubles_from_the_base_after_each_failed_attempt():
    assert [backoff(n, base=60, cap=10**6) for n in (1, 2, 3, 4)] == [60, 120, 240, 480]


def test_the_wait_stops_growing_at_the_cap():
    assert backoff(30, base=60, cap=24 * 3600) == 24 * 3600
    # an absurd attempt count still gives the cap, not an overflow
    assert backoff(10**6, base=60, cap=24 * 3600) == 24 * 3600


def test_jitter_only_lengthens_the_capped_wait_by_up_to_its_fraction():
    assert backoff(3, base=60, cap=10**6, jitter=0.2, random=lambda: 0.0) == 240
    assert backoff(3, base=60, cap=10**6, jitter=0.2, random=lambda: 0.999) == pytest.approx(
        240 * 1.1998
    )
    # applied after the cap: callers at the cap are spread too
    assert backoff(30, base=60, cap=100, jitter=0.5, random=lambda: 0.5) == 125


def test_attempt_zero_or_less_waits_the_base():
    assert backoff(0, base=5, cap=100) == backoff(1, base=5, cap=100) == 5


def test_the_default_random_stays_within_the_jitter():
    waits = {backoff(2, base=10, cap=100, jitter=0.2) for _ in range(200)}
    assert all(20 <= wait < 24 for wait in waits)
    assert len(waits) > 1
