"""Reads of the scheduler's state that every interface shares (CLI, admin, API, dashboard)."""

from __future__ import annotations

from datetime import datetime, timedelta

from scheduler.cron import Cron
from scheduler.services.schedules import effective_offset


def next_starts(cron: Cron, offset: int, *, now: datetime, count: int = 5) -> list[datetime]:
    """The next `count` start moments after `now`: fire time (minute boundary) + effective offset.

    The one implementation of "next start": between a boundary and boundary + offset the start
    of that boundary is still ahead, so the search begins `offset` seconds before `now`.
    """
    shift = timedelta(seconds=effective_offset(offset))
    return [boundary + shift for boundary in cron.next_fire_times(now - shift, count)]
