import datetime as dt

import pytest

from games.periods import period_end, period_start
from tests.games.conftest import at


@pytest.mark.parametrize(
    ("moment", "daily", "weekly"),
    [
        # the last instant of Sunday belongs to the old day and the old ISO week
        (at(2026, 3, 1, 23, 59, 59), dt.date(2026, 3, 1), dt.date(2026, 2, 23)),
        # midnight UTC opens a new day and, on Monday, a new week
        (at(2026, 3, 2, 0, 0, 0), dt.date(2026, 3, 2), dt.date(2026, 3, 2)),
        # ISO week 1 of 2026 starts on Monday 2025-12-29
        (at(2026, 1, 1, 12), dt.date(2026, 1, 1), dt.date(2025, 12, 29)),
    ],
)
def test_periods_start_at_utc_midnight_and_iso_monday(moment, daily, weekly):
    assert period_start("daily", moment) == daily
    assert period_start("weekly", moment) == weekly


def test_a_moment_in_another_time_zone_counts_in_its_utc_day():
    tokyo = dt.timezone(dt.timedelta(hours=9))
    # 08:00 on 2 March in Tokyo is 23:00 on 1 March UTC
    assert period_start("daily", dt.datetime(2026, 3, 2, 8, tzinfo=tokyo)) == dt.date(2026, 3, 1)


def test_a_naive_moment_is_refused():
    with pytest.raises(ValueError, match="naive"):
        period_start("daily", dt.datetime(2026, 3, 2))


def test_period_ends_are_exclusive_utc_midnights():
    assert period_end("daily", dt.date(2026, 3, 1)) == at(2026, 3, 2)
    assert period_end("weekly", dt.date(2026, 2, 23)) == at(2026, 3, 2)
