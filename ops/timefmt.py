"""How the admin, the dashboard and the per-job page write a moment: always to the second, in UTC.

Per-second offsets are the point of the scheduler, so a slot or a start shown without its seconds
("6:21 a.m.") hides the one thing operators look for. Every interface formats moments here (in
templates through the `ops_time` filters), never with Django's locale formats.
"""

from __future__ import annotations

from datetime import UTC, datetime

FULL = "%Y-%m-%d %H:%M:%S"


def at_second(moment: datetime | None, *, now: datetime | None = None) -> str:
    """`2026-12-06 06:19:55 UTC`; with `now`, `06:19:55` when `moment` falls on now's UTC day.

    None (a run that never started, a schedule without a next start) is written `-`.
    """
    if moment is None:
        return "-"
    moment = moment.astimezone(UTC)
    if now is not None and moment.date() == now.astimezone(UTC).date():
        return f"{moment:%H:%M:%S}"
    return f"{moment:{FULL}} UTC"


def ago(moment: datetime | None, *, now: datetime) -> str:
    """`42 s ago`, `7 min 5 s ago`, `3 h 2 min ago`, `2 d 4 h ago`; `in 12 s` for the future."""
    if moment is None:
        return "-"
    seconds = int((now - moment).total_seconds())
    ahead = seconds < 0
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        text = f"{days} d {hours} h"
    elif hours:
        text = f"{hours} h {minutes} min"
    elif minutes:
        text = f"{minutes} min {secs} s"
    else:
        text = f"{secs} s"
    return f"in {text}" if ahead else f"{text} ago"
