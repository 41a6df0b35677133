"""Cron arithmetic with Celery's own parser, so that what we forecast is what beat fires.

Celery's `crontab` expands each field into a set; a minute fires when its minute, hour, day of
month, month and day of week are all in their sets (Celery ANDs day of month with day of week,
unlike Vixie cron's OR). Everything here is UTC unless a schedule names another timezone.

Stricter than Celery's parser, which takes what `int()` takes (`٣` is 3) and steps of any size
(`*/61` is minute 0): a field is ASCII numbers, `*`, three-letter names, ranges, lists and steps
within the field's range; no Quartz `#`, `L`, `W` or `?`. An expression must fire within five
years of now: `0 0 29 2 1` (29 February that is a Monday, ANDed as beat does) is refused.
"""

from __future__ import annotations

import bisect
import functools
import re
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from celery.schedules import ParseException, crontab

MINUTES_PER_DAY = 1440
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
BOUNDS = {
    "minute": (0, 59),
    "hour": (0, 23),
    "day_of_month": (1, 31),
    "month_of_year": (1, 12),
    "day_of_week": (0, 6),
}
# `*`, a number or a name; optionally a range; optionally a step; comma-separated. re.ASCII: `\d`
# is 0-9 only.
_ITEM = r"(?:\*|\d+|[a-z]{3})(?:-(?:\d+|[a-z]{3}))?(?:/\d+)?"
_FIELD = re.compile(rf"{_ITEM}(?:,{_ITEM})*", re.ASCII | re.IGNORECASE)
_STEP = re.compile(r"/(\d+)", re.ASCII)
FIRES_WITHIN = timedelta(days=366 * 5)
_LEAP_YEAR = 2024


class CronError(ValueError):
    """A cron expression that Celery cannot parse or that never fires; the message says which."""


@dataclass(frozen=True)
class Cron:
    """A parsed 5-field cron expression (minute hour day-of-month month day-of-week)."""

    minute: str
    hour: str
    day_of_month: str
    month_of_year: str
    day_of_week: str
    timezone: str = "UTC"

    @classmethod
    def parse(cls, expression: str, timezone: str = "UTC") -> Cron:
        text = ALIASES.get(expression.strip().lower(), expression)
        parts = text.split()
        if len(parts) != 5:
            raise CronError(
                f"cron {expression!r} has {len(parts)} fields; expected 5 "
                "(minute hour day-of-month month day-of-week) or one of " + ", ".join(ALIASES)
            )
        cron = cls(*parts, timezone=timezone)
        cron.validate()
        return cron

    @classmethod
    def from_model(cls, model: object) -> Cron:
        """From a django-celery-beat CrontabSchedule."""
        return cls(
            model.minute,  # type: ignore[attr-defined]
            model.hour,  # type: ignore[attr-defined]
            model.day_of_month,  # type: ignore[attr-defined]
            model.month_of_year,  # type: ignore[attr-defined]
            model.day_of_week,  # type: ignore[attr-defined]
            timezone=str(model.timezone),  # type: ignore[attr-defined]
        )

    def __str__(self) -> str:
        return " ".join(getattr(self, name) for name in FIELDS)

    @property
    def celery(self) -> crontab:
        return _celery_crontab(self)

    def _celery(self) -> crontab:
        return crontab(
            minute=self.minute,
            hour=self.hour,
            day_of_month=self.day_of_month,
            month_of_year=self.month_of_year,
            day_of_week=self.day_of_week,
        )

    def validate(self) -> None:
        # Thousands of schedules share a handful of crons: each distinct one is checked once.
        problem = _problem_of(self)
        if problem:
            raise CronError(problem)

    def _problem(self) -> str | None:
        try:
            self._check()
        except CronError as exc:
            return str(exc)
        return None

    def _check(self) -> None:
        for name in FIELDS:
            _check_syntax(name, getattr(self, name))
            try:
                crontab(**{name: getattr(self, name)})
            except (ParseException, ValueError, IndexError, TypeError) as exc:
                raise CronError(
                    f"cron field {name.replace('_', '-')} {getattr(self, name)!r} is invalid: "
                    f"{exc or 'out of range'}"
                ) from None
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise CronError(f"timezone {self.timezone!r} is not a known IANA timezone") from None
        spec = self.celery
        if not any(
            day in spec.day_of_month
            for month in spec.month_of_year
            for day in range(1, _days_in_month(_LEAP_YEAR, month) + 1)
        ):
            raise CronError(f"cron {self} never fires: no month has such a day")
        now = datetime.now(UTC)
        if not self.next_fire_times(now, 1):  # looks FIRES_WITHIN ahead
            raise CronError(
                f"cron {self} does not fire within five years (day of month and day of week must "
                "both match)"
            )

    def six_field(self, offset: int) -> str:
        """Seconds first, as operators read it in `schedules list`: `15 */5 * * * *`."""
        return f"{offset} {self}"

    def matches_day(self, day: date) -> bool:
        spec = _expanded(self)
        return (
            day.month in spec.months
            and day.day in spec.days
            and (day.isoweekday() % 7) in spec.weekdays  # Celery: 0 = Sunday
        )

    def minutes_of_day(self) -> tuple[int, ...]:
        return _expanded(self).minutes

    def fire_times(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """Every fire time t (UTC) with start <= t < end, ascending."""
        tz = zoneinfo.ZoneInfo(self.timezone)
        minutes = self.minutes_of_day()
        day = start.astimezone(tz).date() - timedelta(days=1)
        last = end.astimezone(tz).date() + timedelta(days=1)
        while day <= last:
            if self.matches_day(day):
                for minute in minutes:
                    local = datetime(
                        day.year, day.month, day.day, minute // 60, minute % 60, tzinfo=tz
                    )
                    moment = local.astimezone(UTC)
                    if start <= moment < end:
                        yield moment
            day += timedelta(days=1)

    def next_fire_times(self, after: datetime, count: int) -> list[datetime]:
        """The first `count` fire times t with after < t < after + FIRES_WITHIN, ascending.
        What every next start is computed from (`scheduler.selectors.next_starts`)."""
        if self.timezone == "UTC":
            return self._next_utc(after, count)
        found: list[datetime] = []
        window = timedelta(days=2)
        start = after
        horizon = after + FIRES_WITHIN
        while len(found) < count and start < horizon:
            for moment in self.fire_times(start, min(start + window, horizon)):
                if moment > after:
                    found.append(moment)
                    if len(found) == count:
                        break
            start += window
            window = min(window * 2, timedelta(days=64))
        return found

    def _next_utc(self, after: datetime, count: int) -> list[datetime]:
        """`next_fire_times` for a UTC cron, where wall time is UTC: from `after`'s own minute
        onwards, day by day (a month it does not fire in is skipped whole), stopping at the
        `count`th. A fire time costs one datetime; `fire_times` turned every minute of each day of
        a two-day window into one (1.6 ms for an every-minute cron, the admin list's cost)."""
        spec = _expanded(self)
        after = after.astimezone(UTC)
        horizon = after + FIRES_WITHIN
        day = after.date()
        # A fire time at minute m of `after`'s day is > after exactly when m > after's minute.
        first = bisect.bisect_right(spec.minutes, after.hour * 60 + after.minute)
        found: list[datetime] = []
        while day <= horizon.date():
            if day.month not in spec.months:
                day = date(day.year + day.month // 12, day.month % 12 + 1, 1)
                first = 0
                continue
            if day.day in spec.days and (day.isoweekday() % 7) in spec.weekdays:
                for of_day in spec.minutes[first:]:
                    hour, minute = divmod(of_day, 60)
                    moment = datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)
                    if moment >= horizon:
                        return found
                    found.append(moment)
                    if len(found) == count:
                        return found
            first = 0
            day += timedelta(days=1)
        return found

    def fires_at(self, moment: datetime) -> bool:
        """Whether `moment` is one of `fire_times` (the same answer, in microseconds, not a day's
        expansion: the worker asks it for every beat run)."""
        tz = zoneinfo.ZoneInfo(self.timezone)
        utc = moment.astimezone(UTC)
        if utc.second or utc.microsecond:
            return False
        spec = self.celery
        # fire_times turns each local wall time into UTC with fold=0: a wall time in a DST gap
        # lands an hour off its real local reading, and in a fall-back hour only the first of the
        # two moments counts. So try the wall time under each offset in force around the moment.
        offsets = {(utc + timedelta(hours=h)).astimezone(tz).utcoffset() for h in (-3, 0, 3)}
        for offset in offsets:
            wall = (utc + offset).replace(tzinfo=None) if offset is not None else None
            if wall is None or wall.minute not in spec.minute or wall.hour not in spec.hour:
                continue
            if self.matches_day(wall.date()) and wall.replace(tzinfo=tz).astimezone(UTC) == utc:
                return True
        return False

    def latest_fire_time(self, at_or_before: datetime) -> datetime | None:
        """The newest fire time <= the given moment, looking back at most 400 days."""
        end = at_or_before + timedelta(microseconds=1)
        window = timedelta(minutes=2)
        while window <= timedelta(days=400):
            times = list(self.fire_times(end - window, end))
            if times:
                return times[-1]
            window *= 4
        return None

    def week_mask(self, start: date, days: int) -> int:
        """Bit i set when the cron fires at minute i after `start` 00:00 UTC, for `days` days."""
        origin = datetime(start.year, start.month, start.day, tzinfo=UTC)
        if self.timezone == "UTC":
            day_mask = 0
            for minute in self.minutes_of_day():
                day_mask |= 1 << minute
            mask = 0
            for index in range(days):
                if self.matches_day(start + timedelta(days=index)):
                    mask |= day_mask << (index * MINUTES_PER_DAY)
            return mask
        mask = 0
        for moment in self.fire_times(origin, origin + timedelta(days=days)):
            mask |= 1 << int((moment - origin).total_seconds() // 60)
        return mask


def _check_syntax(name: str, text: str) -> None:
    label = name.replace("_", "-")
    if not _FIELD.fullmatch(text):
        raise CronError(
            f"cron field {label} {text!r} is invalid: use ASCII numbers, *, names, ranges (a-b), "
            "lists (a,b) and steps (/n) only"
        )
    low, high = BOUNDS[name]
    for step in _STEP.findall(text):
        if not 1 <= int(step) <= high - low:
            raise CronError(
                f"cron field {label} {text!r} is invalid: a step must be between 1 and {high - low}"
            )


@functools.lru_cache(maxsize=4096)
def _celery_crontab(cron: Cron) -> crontab:
    return cron._celery()


@dataclass(frozen=True)
class _Expanded:
    """A cron's fields as sets (Celery's expansion), each computed once per distinct cron."""

    minutes: tuple[int, ...]  # minutes of the day, ascending
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # Celery: 0 = Sunday


@functools.lru_cache(maxsize=4096)
def _expanded(cron: Cron) -> _Expanded:
    spec = cron.celery
    return _Expanded(
        minutes=tuple(sorted(h * 60 + m for h in spec.hour for m in spec.minute)),
        days=frozenset(spec.day_of_month),
        months=frozenset(spec.month_of_year),
        weekdays=frozenset(spec.day_of_week),
    )


@functools.lru_cache(maxsize=4096)
def _problem_of(cron: Cron) -> str | None:
    return cron._problem()


def _days_in_month(year: int, month: int) -> int:
    following = date(year + month // 12, month % 12 + 1, 1)
    return (following - timedelta(days=1)).day
