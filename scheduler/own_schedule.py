"""A job's own schedule, as a worker's admission reads it and the claim statement re-checks it.

Every beat message asks whether the job's own schedule (the row `schedules apply` named after the
job, found by its unique index) is enabled with the message's slot as a fire time plus offset
(scheduler.services.deliveries). A worker process remembers the row it last read for each job. A
message that the remembered row admits is claimed with that row as a guard: the claim statement
(scheduler.ledger.run_claim_fresh) inserts nothing unless the row still reads the same, in its
own statement, and the message then goes through the full admission, which reads the row again.
So the remembered row never decides alone, and the run path saves the admission's round trip
(`make bench ARGS="scheduler --only overhead"`: 253/s with an ORM read, 350/s with one written-out
statement, and the guard folds that statement into the claim).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from django.db import connection

from scheduler.registry import Job

_FROM = """FROM django_celery_beat_periodictask t
        JOIN django_celery_beat_crontabschedule c ON c.id = t.crontab_id
        LEFT JOIN scheduler_jobschedule s ON s.periodic_task_id = t.id
        WHERE t.name = %(schedule_name)s AND t.task = %(schedule_task)s"""

_READ = f"""SELECT t.enabled, c.minute, c.hour, c.day_of_month, c.month_of_year, c.day_of_week,
        c.timezone, COALESCE(s.offset_seconds, 0) {_FROM}"""

# The claim's condition (scheduler.ledger): true when no guard is given, else when the row is
# still enabled and reads as the guard does. Every parameter is NULL without a guard.
STILL_AS_SEEN = f"""(NOT %(guarded)s OR EXISTS (SELECT 1 {_FROM}
        AND t.enabled AND c.minute = %(minute)s AND c.hour = %(hour)s
        AND c.day_of_month = %(day_of_month)s AND c.month_of_year = %(month_of_year)s
        AND c.day_of_week = %(day_of_week)s AND c.timezone = %(timezone)s
        AND COALESCE(s.offset_seconds, 0) = %(offset)s))"""

_GUARD_KEYS = ("schedule_name", "schedule_task", "minute", "hour", "day_of_month")
_GUARD_KEYS += ("month_of_year", "day_of_week", "timezone", "offset")
UNGUARDED: dict[str, Any] = {"guarded": False, **dict.fromkeys(_GUARD_KEYS)}


@dataclass(frozen=True)
class OwnSchedule:
    """The columns of a job's own schedule that admission reads (the offset as stored)."""

    job: str
    task: str
    enabled: bool
    minute: str
    hour: str
    day_of_month: str
    month_of_year: str
    day_of_week: str
    timezone: str
    offset: int

    def guard(self) -> dict[str, Any]:
        """The claim statement's parameters for STILL_AS_SEEN."""
        fields = asdict(self)
        return {
            "guarded": True,
            "schedule_name": fields.pop("job"),
            "schedule_task": fields.pop("task"),
            **{name: value for name, value in fields.items() if name != "enabled"},
        }


class GuardFailed(Exception):
    """The claim inserted nothing: the job's own schedule no longer reads as the worker saw it,
    or the claim could not be the guarded one (the slot has a row, the deadline passed)."""


# What this worker process last read, per job name (a hint: the claim re-checks it).
_seen: dict[str, OwnSchedule] = {}


def own_schedule_read(job: Job) -> OwnSchedule | None:
    """The job's own schedule as stored now (None when it has none), remembered."""
    with connection.cursor() as cursor:
        cursor.execute(_READ, {"schedule_name": job.name, "schedule_task": job.task})
        row = cursor.fetchone()
    if row is None:
        _seen.pop(job.name, None)
        return None
    enabled, minute, hour, day_of_month, month_of_year, day_of_week, tz, offset = row
    seen = OwnSchedule(
        job=job.name,
        task=job.task,
        enabled=enabled,
        minute=minute,
        hour=hour,
        day_of_month=day_of_month,
        month_of_year=month_of_year,
        day_of_week=day_of_week,
        timezone=str(tz),
        offset=offset,
    )
    _seen[job.name] = seen
    return seen


def own_schedule_seen(job: Job) -> OwnSchedule | None:
    """What this process last read of the job's own schedule, without asking the database."""
    return _seen.get(job.name)


def own_schedule_forget(job: Job | None = None) -> None:
    """Forget one job's remembered row (a failed guard), or every job's."""
    if job is None:
        _seen.clear()
    else:
        _seen.pop(job.name, None)
