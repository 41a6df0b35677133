"""The dashboard's forecast, counted per distinct cron, equals enumerating every start."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from scheduler.cron import Cron, CronError
from scheduler.models import JobSchedule
from scheduler.selectors import concurrency_series, forecast
from scheduler.services.schedules import enabled_plans
from tests.ops.conftest import make_run

pytestmark = pytest.mark.django_db

MINUTES = ["*", "*/5", "*/7", "0", "15,45", "10-20", "5-50/15", "59"]
HOURS = ["*", "*/3", "0", "3", "22-23", "9-17", "23"]
DAYS = ["*", "*", "1", "28-31", "*/2", "15"]
MONTHS = ["*", "*", "*", "2", "3", "1-6", "12"]
WEEKDAYS = ["*", "*", "*", "0", "1-5", "6"]
ZONES = ["UTC", "UTC", "UTC", "Europe/Berlin", "America/New_York"]
MOMENTS = [
    datetime(2026, 2, 28, 23, 37, 12, 500_000, tzinfo=UTC),  # month end, a fraction of a second
    datetime(2026, 3, 29, 0, 30, 0, tzinfo=UTC),  # Europe's clocks go forward at 01:00 UTC
    datetime(2026, 11, 1, 5, 59, 59, 999_999, tzinfo=UTC),  # New York's go back at 06:00 UTC
    datetime(2026, 12, 31, 22, 0, 0, tzinfo=UTC),  # year end
]


def random_schedules(rng: random.Random, count: int) -> None:
    """`count` schedules on a few random crons (many share one), random offsets; some disabled,
    some without a JobSchedule (offset 0)."""
    crons: list[CrontabSchedule] = []
    while len(crons) < 8:
        fields = [rng.choice(pool) for pool in (MINUTES, HOURS, DAYS, MONTHS, WEEKDAYS)]
        zone = rng.choice(ZONES)
        try:
            Cron(*fields, timezone=zone).validate()
        except CronError:
            continue
        crons.append(
            CrontabSchedule.objects.create(
                minute=fields[0],
                hour=fields[1],
                day_of_month=fields[2],
                month_of_year=fields[3],
                day_of_week=fields[4],
                timezone=zone,
            )
        )
    tasks = PeriodicTask.objects.bulk_create(
        PeriodicTask(
            name=f"random-{i:03d}",
            task="tests.anything",
            crontab=rng.choice(crons),
            kwargs="{}",
            enabled=rng.random() > 0.1,
        )
        for i in range(count)
    )
    JobSchedule.objects.bulk_create(
        JobSchedule(periodic_task=t, offset_seconds=rng.randrange(60), tracked_since=timezone.now())
        for t in tasks
        if rng.random() > 0.2
    )


def enumerated(now: datetime, hours: int) -> list[tuple[datetime, str]]:
    """The brute force the dashboard used to do: every start of every schedule, sorted."""
    end = now + timedelta(hours=hours)
    starts = []
    for plan in enabled_plans():
        shift = timedelta(seconds=plan.offset)
        starts += [(b + shift, plan.name) for b in plan.cron.fire_times(now - shift, end - shift)]
    return sorted(s for s in starts if now <= s[0] < end)


def assert_same_as_enumeration(now: datetime, hours: int = 24) -> None:
    starts = enumerated(now, hours)
    counted = forecast(now=now, hours=hours)
    per_hour = [0] * hours
    for moment, _ in starts:
        per_hour[int((moment - now).total_seconds() // 3600)] += 1
    by_second = Counter(moment for moment, _ in starts)
    peak = max(by_second.values(), default=0)
    assert counted.total == len(starts)
    assert counted.per_hour == per_hour
    assert counted.peak_per_second == peak
    assert counted.peak_at == sorted(m for m, c in by_second.items() if c == peak)[:5]
    assert counted.next_starts == starts[:24]


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_the_counted_forecast_equals_enumerating_every_start(seed):
    random_schedules(random.Random(seed), count=60)
    for now in MOMENTS:
        assert_same_as_enumeration(now)
    assert_same_as_enumeration(MOMENTS[0], hours=3)


def test_with_the_stagger_off_every_schedule_starts_at_second_zero(settings):
    from dataclasses import replace

    random_schedules(random.Random(7), count=40)
    stagger = replace(settings.SCHEDULER.stagger, enabled=False)
    settings.SCHEDULER = replace(settings.SCHEDULER, stagger=stagger)
    assert_same_as_enumeration(MOMENTS[0])
    assert {moment.second for moment, _ in forecast(now=MOMENTS[0]).next_starts} == {0}


def test_an_empty_schedule_table_forecasts_nothing():
    counted = forecast(now=MOMENTS[0])
    assert (counted.total, counted.peak_per_second, counted.next_starts) == (0, 0, [])
    assert counted.per_hour == [0] * 24


def test_concurrency_counts_overlapping_runs_not_back_to_back_ones():
    since = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
    make_run("cleanup", since - timedelta(minutes=5), duration_ms=10 * 60_000)  # going at since
    make_run("settlement", since + timedelta(minutes=1), duration_ms=60_000)  # overlaps it
    make_run("referral-tier2", since + timedelta(minutes=2), duration_ms=60_000)  # right after
    make_run("referral-tier3", since + timedelta(minutes=20), duration_ms=60_000)
    series = concurrency_series(since=since, until=since + timedelta(minutes=30), buckets=6)
    assert [level for _, level in series] == [2, 1, 0, 0, 1, 0]
    assert series[1][0] == since + timedelta(minutes=5)
