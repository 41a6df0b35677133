"""Django system checks: bad stagger variables are errors, schedule collisions are warnings."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, Tags, Warning, register
from django.db import DatabaseError


@register(Tags.compatibility)
def stagger_environment(app_configs: Any = None, **_: Any) -> list[Error]:
    from scheduler.services.schedules import check_stagger_environment

    return [Error(message, id="scheduler.E001") for message in check_stagger_environment()]


@register(Tags.database)
def schedule_collisions(app_configs: Any = None, databases: Any = None, **_: Any) -> list:
    """Runs only with `check --database default` (it reads the schedules)."""
    if not databases:
        return []
    from scheduler.collisions import analyse
    from scheduler.services.schedules import broken_schedules, enabled_plans

    try:
        report = analyse(enabled_plans())
        broken = broken_schedules()
    except DatabaseError:
        return []
    return [
        Warning(
            f"schedule {name!r} cannot be sent by beat: {'; '.join(problems)}",
            hint="fix or disable it in the admin; beat leaves it out until then",
            id="scheduler.W003",
        )
        for name, problems in broken.items()
    ] + [
        Warning(
            f"{len(c.jobs)} jobs start in the same second ({', '.join(c.jobs)}) at offset "
            f"{c.offset}, {c.seconds} times a week, first {c.first:%a %H:%M:%S} UTC",
            hint="run `manage.py schedules check --suggest` for free offsets",
            id="scheduler.W001",
        )
        for c in report.collisions
    ]


@register(Tags.compatibility)
def visibility_timeout(app_configs: Any = None, **_: Any) -> list[Warning]:
    """Redis redelivers a message held longer than this: offset + the longest job must fit."""
    from django.conf import settings

    from scheduler.registry import all_jobs

    timeout = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    longest = max((job for job in all_jobs()), key=lambda job: job.time_limit, default=None)
    if longest is None or timeout > 60 + longest.time_limit:
        return []
    return [
        Warning(
            f"CELERY_VISIBILITY_TIMEOUT={timeout} s is not above the largest offset (59 s) plus "
            f"the longest job's time limit ({longest.name}: {longest.time_limit} s): Redis would "
            "deliver such a run again while it still runs (recorded as a duplicate, but wasted)",
            id="scheduler.W002",
        )
    ]
