"""Schedules in the database, read: defaults of the registry's jobs, effective offsets, the
enabled plans, and what would make beat unable to send a schedule.

Every write is in `scheduler.services.writes` (audited there).
"""

from __future__ import annotations

import json
from typing import Any

from django.db.models import Q
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from scheduler import conf
from scheduler.collisions import Planned
from scheduler.conf import PROFILES, stagger_enabled
from scheduler.cron import Cron, CronError
from scheduler.registry import Job, all_jobs, job_for_task

TEST_CRON = "* * * * *"
# What a job's message carries (JobTask.run_job's parameters): beat and the dispatch path set
# them, the worker checks them (scheduler.services.deliveries). A schedule that names one would
# speak for the run path (a slot, a trigger, a user to credit), so it is refused.
RESERVED_KWARGS = ("slot", "trigger", "attempt", "run_id", "user_id", "reason")


def default_offset(job: Job) -> int:
    """The offset `apply` writes: JOB_STAGGER_<JOB> if set, else the job's declared default."""
    return conf.load().stagger.offsets.get(job.env_name, job.offset)


def profile_cron(job: Job, profile: str) -> Cron:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    return Cron.parse(TEST_CRON if profile == "test" else job.cron)


def effective_offset(stored: int) -> int:
    return stored if stagger_enabled() else 0


def crontab_fields(cron: Cron) -> dict[str, str]:
    """The `CrontabSchedule` columns of `cron`: what a row for it holds."""
    return {
        "minute": cron.minute,
        "hour": cron.hour,
        "day_of_month": cron.day_of_month,
        "month_of_year": cron.month_of_year,
        "day_of_week": cron.day_of_week,
        "timezone": cron.timezone,
    }


def crontab_unsaved(cron: Cron) -> CrontabSchedule:
    """An unsaved `CrontabSchedule` for `cron`, for validating a schedule before anything is
    written (the admin's typed cron): `schedule_save` replaces it with a stored row
    (`crontab_for`). Writes nothing, reads nothing."""
    return CrontabSchedule(**crontab_fields(cron))


def schedule_crontab(task: PeriodicTask) -> CrontabSchedule | None:
    """The task's crontab, stored or not yet (`crontab_unsaved`); None when it has none.

    No query for a task without a crontab; `crontab_id` alone misses an unsaved one."""
    if task.crontab_id is None and task.crontab is None:
        return None
    return task.crontab


def enabled_plans() -> list[Planned]:
    """Every enabled crontab PeriodicTask with its effective offset (0 without a JobSchedule)."""
    plans = []
    tasks = PeriodicTask.objects.filter(enabled=True, crontab__isnull=False).select_related(
        "crontab", "job_schedule"
    )
    for task in tasks:
        try:
            cron = Cron.from_model(task.crontab)
            cron.validate()
        except CronError:
            continue  # reported by schedule_problems
        stored = getattr(getattr(task, "job_schedule", None), "offset_seconds", 0)
        plans.append(Planned(task.name, cron, effective_offset(stored)))
    return plans


def schedule_problems(
    task: PeriodicTask, registered: set[str], *, check_crontab: bool = True
) -> list[str]:
    """What would make beat unable to send this task; empty when it is sound.

    `task` may carry an unsaved crontab (`crontab_unsaved`): the admin validates a typed cron
    before `schedule_save` writes its row."""
    problems = []
    for name, kind in (("args", list), ("kwargs", dict), ("headers", dict)):
        raw = getattr(task, name) or ("[]" if kind is list else "{}")
        try:
            value: Any = json.loads(raw)
        except ValueError as exc:
            problems.append(f"{name} is not valid JSON ({exc.msg} at {exc.pos})")
            continue
        if not isinstance(value, kind):
            problems.append(f"{name} must be a JSON {'list' if kind is list else 'object'}")
    crontab = schedule_crontab(task)
    if check_crontab and crontab is not None:
        try:
            Cron.from_model(crontab).validate()
        except CronError as exc:
            problems.append(str(exc))
    if task.task not in registered:
        problems.append(f"task {task.task!r} is not registered with Celery")
    if job_for_task(task.task) is not None:
        problems.extend(_job_task_problems(task))
    return problems


def _job_task_problems(task: PeriodicTask) -> list[str]:
    """A job's slots are its cron's fire times plus its offset, and its message's arguments are
    the run path's own: the worker refuses anything else, so it is refused at save already."""
    problems = []
    if schedule_crontab(task) is None:
        problems.append(
            f"crontab is required: {task.task!r} is a job, and a job runs only at the fire times "
            "of a crontab schedule (not an interval, solar or clocked one)"
        )
    try:
        args, kwargs = json.loads(task.args or "[]"), json.loads(task.kwargs or "{}")
    except ValueError:
        return problems  # said above
    if isinstance(args, list) and args:
        problems.append(f"args must be empty: job {task.task!r} takes no positional arguments")
    if isinstance(kwargs, dict) and kwargs:
        reserved = sorted(set(kwargs) & set(RESERVED_KWARGS))
        if reserved:
            problems.append(
                f"kwargs name {', '.join(reserved)}: beat and the run path set these, a schedule "
                "may not"
            )
        others = sorted(set(kwargs) - set(RESERVED_KWARGS))
        if others:
            problems.append(
                f"kwargs name {', '.join(others)}: job {task.task!r} takes no arguments of its own"
            )
    return problems


def check_stagger_environment() -> list[str]:
    """JOB_STAGGER_<JOB> variables that name no registered job, each naming its variable.

    Settings refused a bad value already (at start, naming the variable); which jobs exist is
    known only once the apps are loaded, so this check, run at start, refuses the unknown names."""
    known = {job.env_name for job in all_jobs()}
    return [
        f"{name} names no registered job (known: {', '.join(sorted(known))})"
        for name in sorted(conf.load().stagger.offsets)
        if name not in known
    ]


def broken_schedules() -> dict[str, list[str]]:
    """Every enabled periodic task beat cannot send, with what is wrong with it."""
    from celery import current_app as app

    registered = set(app.tasks.keys())
    enabled = PeriodicTask.objects.filter(enabled=True)
    # The admin's schedule list asks on every view: only rows that could have a problem are
    # loaded and judged by schedule_problems (at 10,000 healthy rows, ~1.4 s -> one query).
    # A problem needs a non-default args/kwargs/headers, a bad crontab (each distinct one checked
    # once), an unregistered task, or a job off cron.
    bad_crontabs = []
    for crontab in CrontabSchedule.objects.filter(pk__in=enabled.values("crontab_id")):
        try:
            Cron.from_model(crontab).validate()
        except CronError:
            bad_crontabs.append(crontab.pk)
    suspects = (
        ~Q(task__in=registered)
        | Q(crontab_id__in=bad_crontabs)
        | Q(task__in=[job.task for job in all_jobs()], crontab__isnull=True)
    )
    for name, default in (("args", "[]"), ("kwargs", "{}"), ("headers", "{}")):
        suspects |= ~Q(**{f"{name}__in": [default, ""]}) & Q(**{f"{name}__isnull": False})
    found = {}
    for task in enabled.filter(suspects).select_related("crontab"):
        problems = schedule_problems(task, registered)
        if problems:
            found[task.name] = problems
    return found
