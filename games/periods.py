"""Board and pool periods, in UTC: a day starts at midnight, an ISO week on Monday at midnight."""

from __future__ import annotations

import datetime as dt

from games.models import ALL_TIME_START, BoardPeriod, PoolPeriod


def utc_date(moment: dt.datetime) -> dt.date:
    """The UTC calendar date of an aware moment (a naive one is a bug: refused)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("naive datetime: games periods are computed from aware UTC moments")
    return moment.astimezone(dt.UTC).date()


def period_start(period: str, moment: dt.datetime) -> dt.date:
    """First day of the board/pool period that contains `moment`."""
    day = utc_date(moment)
    if period == BoardPeriod.DAILY:
        return day
    if period == BoardPeriod.WEEKLY:
        return day - dt.timedelta(days=day.isoweekday() - 1)
    if period == BoardPeriod.ALL_TIME:
        return ALL_TIME_START
    raise ValueError(f"unknown period {period!r}")


def period_length(period: str) -> dt.timedelta:
    if period == PoolPeriod.DAILY:
        return dt.timedelta(days=1)
    if period == PoolPeriod.WEEKLY:
        return dt.timedelta(days=7)
    raise ValueError(f"period {period!r} has no end")


def period_end(period: str, start: dt.date) -> dt.datetime:
    """The UTC moment a daily/weekly period that began on `start` ends (exclusive)."""
    end = start + period_length(period)
    return dt.datetime(end.year, end.month, end.day, tzinfo=dt.UTC)


def current_boards(now: dt.datetime) -> list[tuple[str, dt.date]]:
    """(period, period_start) of the boards that are live at `now`, for every game."""
    return [(period, period_start(period, now)) for period in BoardPeriod.values]
