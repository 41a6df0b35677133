from datetime import UTC, date, datetime, timedelta

import pytest

from scheduler.cron import FIRES_WITHIN, Cron, CronError


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("61 * * * *", "minute '61' is invalid"),
        ("99 * * * *", "minute '99' is invalid"),
        ("0 0 31 2 *", "never fires"),
        ("* * *", "has 3 fields"),
        ("0 25 * * *", "hour '25' is invalid"),
    ],
)
def test_bad_cron_is_refused_with_the_field_named(expression, message):
    with pytest.raises(CronError, match=message):
        Cron.parse(expression)


def test_unknown_timezone_is_refused():
    with pytest.raises(CronError, match="Mars/Base"):
        Cron.parse("0 0 * * *", "Mars/Base")


def test_aliases_and_next_fire_times():
    assert str(Cron.parse("@hourly")) == "0 * * * *"
    moment = datetime(2026, 11, 23, 12, 3, 30, tzinfo=UTC)
    assert Cron.parse("*/5 * * * *").next_fire_times(moment, 2) == [
        datetime(2026, 11, 23, 12, 5, tzinfo=UTC),
        datetime(2026, 11, 23, 12, 10, tzinfo=UTC),
    ]
    assert Cron.parse("0 0 * * 1").next_fire_times(moment, 1) == [
        datetime(2026, 11, 30, 0, 0, tzinfo=UTC)
    ]
    assert Cron.parse("0 * * * *").latest_fire_time(moment) == datetime(
        2026, 11, 23, 12, 0, tzinfo=UTC
    )


def test_a_schedule_in_another_timezone_fires_at_its_local_time():
    cron = Cron.parse("0 9 * * *", "Europe/Berlin")
    winter = cron.next_fire_times(datetime(2026, 1, 10, tzinfo=UTC), 1)[0]
    summer = cron.next_fire_times(datetime(2026, 7, 10, tzinfo=UTC), 1)[0]
    assert (winter.hour, summer.hour) == (8, 7)


@pytest.mark.parametrize("expression", ["30 2 * * *", "*/15 * * * *", "0 0 * * 1", "5 1-3 29 2 *"])
@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin"])
@pytest.mark.parametrize("day", [date(2026, 3, 29), date(2026, 10, 25), date(2028, 2, 28)])
def test_fires_at_agrees_with_fire_times_across_dst_changes(expression, zone, day):
    cron = Cron.parse(expression, timezone=zone)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(hours=6)
    end = start + timedelta(days=2)
    expected = set(cron.fire_times(start, end))
    minutes = [start + timedelta(minutes=n) for n in range(2 * 24 * 60)]

    assert {m for m in minutes if cron.fires_at(m)} == expected
    assert not any(cron.fires_at(m + timedelta(seconds=1)) for m in expected)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("٣ * * * *", "ASCII"),  # an Arabic-Indic three: int() takes it, we do not
        ("0 0 * * MON-FRI#1", "ASCII"),  # Quartz "first weekday"
        ("0 0 L * *", "ASCII"),  # Quartz "last day"
        ("0 0 15W * *", "ASCII"),  # Quartz "nearest weekday"
        ("0 0 ? * *", "ASCII"),
        ("*/61 * * * *", "between 1 and 59"),
        ("*/60 * * * *", "between 1 and 59"),
        ("0 */0 * * *", "between 1 and 23"),
        ("0 0 1-31/40 * *", "between 1 and 30"),
        ("0 0 29 2 1", "does not fire within five years"),
    ],
)
def test_the_parser_is_strict(expression, message):
    with pytest.raises(CronError, match=message):
        Cron.parse(expression)


@pytest.mark.parametrize(
    "expression",
    [
        "*/59 * * * *",
        "0 0 * * mon-fri",
        "0 0 1 jan *",
        "5,35 */2 1-15/7 1-12/3 0-6/2",
        "0 0 29 2 *",  # every leap day: within four years
        "0 0 13 * 5",  # Friday the 13th: ANDed, a few times a year
    ],
)
def test_the_parser_takes_what_cron_means(expression):
    assert str(Cron.parse(expression)) == expression


def test_day_of_month_and_day_of_week_are_anded_as_beat_does():
    # Vixie cron would fire every Friday and every 13th; Celery (beat) only on Friday the 13th.
    times = Cron.parse("0 0 13 * 5").next_fire_times(datetime(2026, 1, 1, tzinfo=UTC), 2)
    assert times == [datetime(2026, 2, 13, tzinfo=UTC), datetime(2026, 3, 13, tzinfo=UTC)]


def _enumerated(cron: Cron, after: datetime, count: int) -> list[datetime]:
    """The definition: the first `count` of `fire_times` in (after, after + FIRES_WITHIN)."""
    span = timedelta(days=2)
    while True:
        span = min(span, FIRES_WITHIN)
        found = [t for t in cron.fire_times(after, after + span) if t > after][:count]
        if len(found) == count or span == FIRES_WITHIN:
            return found
        span *= 4


@pytest.mark.parametrize("seed", range(6))
def test_next_fire_times_of_a_utc_cron_are_the_first_of_fire_times(seed):
    """The UTC fast path (one datetime per fire time) against `fire_times` (every minute of every
    day), at boundaries, just after them, at month, leap-day and year ends."""
    import random

    rng = random.Random(seed)
    pools = (
        ["*", "*/5", "*/7", "0", "15,45", "10-20", "5-50/15", "59"],
        ["*", "*/3", "0", "3", "22-23", "9-17", "23"],
        ["*", "*", "1", "28-31", "*/2", "15", "29", "31"],
        ["*", "*", "*", "2", "3", "1-6", "12", "2,8"],
        ["*", "*", "*", "0", "1-5", "6", "mon"],
    )
    moments = [
        datetime(2026, 12, 31, 23, 59, tzinfo=UTC),
        datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2028, 2, 28, 23, 0, 30, tzinfo=UTC),
        datetime(2026, 3, 29, 0, 30, tzinfo=UTC),
        datetime(2026, 1, 31, 12, 15, 0, 1, tzinfo=UTC),
    ]
    checked = 0
    while checked < 25:
        cron = Cron(*(rng.choice(pool) for pool in pools))
        try:
            cron.validate()
        except CronError:
            continue
        checked += 1
        for after in moments:
            for count in (1, 5):
                assert cron.next_fire_times(after, count) == _enumerated(cron, after, count), (
                    str(cron),
                    after,
                )
