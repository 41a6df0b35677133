from datetime import date

from scheduler.collisions import Planned, analyse
from scheduler.cron import Cron
from tests.scheduler.test_registry import DEFAULT_TABLE

MONDAY = date(2026, 11, 23)


def _plans(stagger: bool) -> list[Planned]:
    return [
        Planned(name, Cron.parse(cron), offset if stagger else 0)
        for name, (cron, offset) in DEFAULT_TABLE.items()
    ]


def test_the_default_table_never_starts_two_jobs_in_one_second():
    report = analyse(_plans(stagger=True), start=MONDAY)
    assert report.ok
    assert report.peak == 1


def test_without_stagger_ten_jobs_start_together_at_midnight_three_and_four():
    report = analyse(_plans(stagger=False), start=MONDAY)
    assert report.peak == 10
    assert {(m.hour, m.minute, m.second) for m in report.peak_at} <= {
        (0, 0, 0),
        (3, 0, 0),
        (4, 0, 0),
    }
    assert report.peak_at[0].hour == 0


def test_collisions_come_from_real_fire_times_not_equal_offsets():
    # Same offset, but one fires at even minutes and the other at odd ones: never together.
    apart = [
        Planned("even", Cron.parse("*/2 * * * *"), 5),
        Planned("odd", Cron.parse("1-59/2 * * * *"), 5),
    ]
    assert analyse(apart, start=MONDAY).ok
    together = [
        Planned("hourly", Cron.parse("0 * * * *"), 5),
        Planned("daily", Cron.parse("0 3 * * *"), 5),
    ]
    report = analyse(together, start=MONDAY)
    assert report.collisions[0].jobs == ["daily", "hourly"]
    assert report.collisions[0].seconds == 7


def test_suggestions_move_a_job_to_a_free_second():
    plans = [Planned("a", Cron.parse("* * * * *"), 0), Planned("b", Cron.parse("* * * * *"), 0)]
    report = analyse(plans, start=MONDAY, suggest=True)
    assert report.suggestions == {"b": 1}
    moved = [plans[0], Planned("b", Cron.parse("* * * * *"), report.suggestions["b"])]
    assert analyse(moved, start=MONDAY).ok


def test_a_weekly_job_collides_only_on_its_day():
    plans = [
        Planned("monday", Cron.parse("0 0 * * 1"), 0),
        Planned("daily", Cron.parse("0 0 * * *"), 0),
    ]
    report = analyse(plans, start=MONDAY)
    assert report.collisions[0].seconds == 1
    assert report.collisions[0].first.weekday() == 0
