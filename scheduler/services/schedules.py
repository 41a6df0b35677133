"""Schedules in the database: apply the registry's jobs as PeriodicTasks, list, remove, validate.

`schedules_apply` upserts; it never deletes run history or `last_run_at`, and keeps what staff
changed in the admin (cron, offset, enabled) unless `reset=True`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask, PeriodicTasks

from scheduler import conf
from scheduler.collisions import Planned
from scheduler.conf import PROFILES, stagger_enabled
from scheduler.cron import Cron, CronError
from scheduler.models import JobSchedule
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


def crontab_for(cron: Cron) -> CrontabSchedule:
    """A CrontabSchedule row for `cron`, reused when one exists.

    Not `get_or_create`: the table has no unique constraint, so two parallel writers can both
    create one, and `get_or_create`'s `get` then raises MultipleObjectsReturned for ever after.
    """
    fields = {
        "minute": cron.minute,
        "hour": cron.hour,
        "day_of_month": cron.day_of_month,
        "month_of_year": cron.month_of_year,
        "day_of_week": cron.day_of_week,
        "timezone": cron.timezone,
    }
    existing = CrontabSchedule.objects.filter(**fields).order_by("pk").first()
    return existing or CrontabSchedule.objects.create(**fields)


@dataclass
class Change:
    job: str
    action: str  # created, updated, unchanged, kept
    details: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        extra = f" ({'; '.join(self.details)})" if self.details else ""
        return f"{self.action:9} {self.job}{extra}"


@transaction.atomic
def schedules_apply(*, profile: str = "production", reset: bool = False) -> list[Change]:
    """Make every registered job a PeriodicTask on its cron with its offset; idempotent."""
    now = timezone.now()
    changes: list[Change] = []
    for job in all_jobs():
        cron = profile_cron(job, profile)
        offset = default_offset(job)
        task = PeriodicTask.objects.filter(name=job.name).select_related("crontab").first()
        if task is None:
            task = PeriodicTask.objects.create(
                name=job.name,
                task=job.task,
                crontab=crontab_for(cron),
                queue=job.queue,
                priority=job.priority,
                description=job.description,
                kwargs="{}",
                enabled=True,
            )
            JobSchedule.objects.create(periodic_task=task, offset_seconds=offset, tracked_since=now)
            changes.append(Change(job.name, "created", [f"{cron.six_field(offset)}"]))
            continue
        changes.append(_update(task, job, cron, offset, reset=reset, now=now))
    PeriodicTasks.update_changed()
    return changes


def _update(task: PeriodicTask, job: Job, cron: Cron, offset: int, *, reset: bool, now) -> Change:
    details: list[str] = []
    schedule, _ = JobSchedule.objects.get_or_create(
        periodic_task=task, defaults={"offset_seconds": offset, "tracked_since": now}
    )
    # The code owns the task name, queue and description; staff own cron, offset and enabled.
    owned = {
        "task": job.task,
        "queue": job.queue,
        "priority": job.priority,
        "description": job.description,
    }
    for name, value in owned.items():
        if getattr(task, name) != value:
            details.append(f"{name}: {getattr(task, name)!r} -> {value!r}")
            setattr(task, name, value)
    # A job takes no arguments and runs on a crontab only (`_job_task_problems`): rows from
    # before that rule, which beat now leaves out, are made sendable again.
    for name, empty in (("args", "[]"), ("kwargs", "{}")):
        if (getattr(task, name) or empty).strip() not in (empty, ""):
            details.append(f"{name}: {getattr(task, name)} -> {empty} (a job takes none)")
            setattr(task, name, empty)
    current = Cron.from_model(task.crontab) if task.crontab else None
    if current != cron and (reset or current is None):
        details.append(f"cron: {current} -> {cron}")
        task.crontab = crontab_for(cron)
        task.interval = task.solar = task.clocked = None  # one schedule per task
        schedule.tracked_since = now
    elif current != cron:
        details.append(f"cron {current} kept (staff edit; --reset restores {cron})")
    if schedule.offset_seconds != offset and reset:
        details.append(f"offset: {schedule.offset_seconds} -> {offset}")
        schedule.offset_seconds = offset
    elif schedule.offset_seconds != offset:
        details.append(f"offset {schedule.offset_seconds} kept (--reset restores {offset})")
    if reset and not task.enabled:
        details.append("enabled")
        task.enabled = True
        schedule.tracked_since = now
    changed = [d for d in details if " kept " not in d]
    if changed:
        task.save()
        schedule.save()
    return Change(job.name, "updated" if changed else "unchanged", details)


@transaction.atomic
def schedules_remove(*, names: list[str] | None = None) -> list[str]:
    """Delete the PeriodicTasks of these jobs (all registered jobs when None); runs stay."""
    wanted = names if names is not None else [job.name for job in all_jobs()]
    tasks = PeriodicTask.objects.filter(name__in=wanted)
    removed = sorted(tasks.values_list("name", flat=True))
    tasks.delete()
    PeriodicTasks.update_changed()
    return removed


def effective_offset(stored: int) -> int:
    return stored if stagger_enabled() else 0


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
    """What would make beat unable to send this task; empty when it is sound."""
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
    if check_crontab and task.crontab_id:
        try:
            Cron.from_model(task.crontab).validate()
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
    if not task.crontab_id:
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
