"""Every schedule write, each audited: create, update, delete, enable/disable, toggle, the
admin's whole-form save, crontab edits, and `schedules apply|remove`.

The interfaces (admin, ops API, management commands) translate their input and call these with an
`Actor`; each service validates, writes, restarts slot tracking where the slots moved
(`schedule_tracking_restart`, the one rule), writes its audit rows in the same transaction and
tells beat (`schedules_changed`, the one call of `PeriodicTasks.update_changed`). Refused input
raises `WriteRefused` naming the field, before anything is written.

Lock order, the same in every write so that parallel writes wait instead of deadlocking: the
`PeriodicTask` rows first (one `select_for_update`, ascending pk, no joins), then their
`JobSchedule` rows, then django-celery-beat's `PeriodicTasks` change marker (its signals and
`update_changed`). A schedule deleted by a parallel request raises `PeriodicTask.DoesNotExist`.

Model signals (scheduler.signals) only validate: a bulk `.update()` skips them anyway, and a rule
kept in a signal and again in a service drifts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask, PeriodicTasks

from scheduler.audit import Actor, audit_record
from scheduler.cron import Cron, CronError
from scheduler.models import AuditEvent, JobSchedule
from scheduler.preview import Preview, schedule_preview
from scheduler.registry import QUEUES, Job, all_jobs, find_job
from scheduler.services.schedules import (
    crontab_fields,
    default_offset,
    profile_cron,
    schedule_crontab,
)
from scheduler.validators import WriteRefused, check_offset

Action = AuditEvent.Action


# ---------------------------------------------------------------------------------------------
# The two rules every write shares
# ---------------------------------------------------------------------------------------------


def schedule_tracking_restart(schedule: JobSchedule, now: datetime) -> None:
    """New slots from `now` on: the schedule was created, switched on, or its cron or offset
    moved, so the reconciler must not look for slots of the old settings as missing, and the
    worker refuses a queued message of the old settings (scheduler.services.deliveries).
    The caller saves `schedule` (with its other changes)."""
    schedule.tracked_since = now
    schedule.reconciled_until = None


def schedules_tracking_restart(*, task_ids: Iterable[int], now: datetime) -> int:
    """`schedule_tracking_restart` for many schedules in one statement; how many rows."""
    return JobSchedule.objects.filter(periodic_task_id__in=list(task_ids)).update(
        tracked_since=now, reconciled_until=None
    )


def schedules_changed() -> None:
    """Tell beat to reload its entries (and their offsets, which live in our table).

    django-celery-beat marks a change from its own model signals, which a bulk `.update()` and
    a change of our `JobSchedule` skip; every write here ends with this, last in the lock order.
    """
    PeriodicTasks.update_changed()


# ---------------------------------------------------------------------------------------------
# Input checks and the audit snapshot
# ---------------------------------------------------------------------------------------------


def parse_cron(value: object) -> Cron:
    if not isinstance(value, str):
        raise WriteRefused("cron", "must be a string: five fields or @hourly/@daily/...")
    try:
        return Cron.parse(value)
    except CronError as exc:
        raise WriteRefused("cron", str(exc)) from None


def _check_queue(value: object) -> str:
    if value not in QUEUES:
        raise WriteRefused("queue", f"must be one of {', '.join(QUEUES)}")
    return str(value)


def _check_priority(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 9:
        raise WriteRefused("priority", "must be a whole number between 0 (highest) and 9")
    return value


def job_of(name: object) -> Job:
    """The registered job called `name`, or `WriteRefused` on field `job`."""
    job = find_job(name) if isinstance(name, str) else None
    if job is None:
        raise WriteRefused("job", f"unknown job {name!r}")
    return job


def schedule_snapshot(task: PeriodicTask) -> dict[str, Any]:
    """What operators own in a schedule, as JSON for the audit trail (read fresh from the DB)."""
    task = PeriodicTask.objects.select_related("crontab", "interval").get(pk=task.pk)
    stored = JobSchedule.objects.filter(periodic_task_id=task.pk).first()
    cron = str(Cron.from_model(task.crontab)) if task.crontab_id else None
    return {
        "name": task.name,
        "task": task.task,
        "enabled": task.enabled,
        "cron": cron,
        "interval": str(task.interval) if task.interval_id else None,
        "offset": stored.offset_seconds if stored else None,
        "queue": task.queue,
        "priority": task.priority,
        "args": task.args,
        "kwargs": task.kwargs,
        "one_off": task.one_off,
    }


def _audit_schedule(
    actor: Actor,
    action: str,
    task: PeriodicTask,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    reason: str = "",
) -> None:
    audit_record(
        actor=actor,
        action=action,
        object_type="schedule",
        object_id=task.pk,
        object_repr=task.name,
        before=before,
        after=after,
        reason=reason,
    )


def _locked(pk: int) -> PeriodicTask:
    """The schedule's row, locked: the first lock every schedule write takes (see above)."""
    return PeriodicTask.objects.select_for_update().get(pk=pk)


def _job_schedule_create(task: PeriodicTask, offset: int, now: datetime) -> JobSchedule:
    schedule = JobSchedule(periodic_task=task, offset_seconds=check_offset(offset))
    schedule_tracking_restart(schedule, now)
    schedule.save()
    return schedule


# ---------------------------------------------------------------------------------------------
# One schedule: create, update, the admin's form save, delete
# ---------------------------------------------------------------------------------------------


def schedule_create(
    *,
    actor: Actor,
    job_name: str,
    cron: Cron,
    offset: int,
    enabled: bool = True,
    queue: str | None = None,
    priority: int | None = None,
    dry_run: bool = False,
) -> tuple[PeriodicTask | None, Preview]:
    """A schedule for a registered job that has none (e.g. after `schedules remove`)."""
    job = job_of(job_name)
    offset = check_offset(offset)
    queue = _check_queue(queue if queue is not None else job.queue)
    priority = _check_priority(priority if priority is not None else job.priority)
    if PeriodicTask.objects.filter(name=job.name).exists():
        raise WriteRefused("job", f"{job.name} already has a schedule; update it instead")
    preview = schedule_preview(name=job.name, cron=cron, offset=offset, enabled=enabled)
    if dry_run:
        return None, preview
    try:
        with transaction.atomic():
            task = PeriodicTask.objects.create(
                name=job.name,
                task=job.task,
                crontab=crontab_for(cron),
                queue=queue,
                priority=priority,
                description=job.description,
                kwargs="{}",
                enabled=enabled,
            )
            _job_schedule_create(task, offset, timezone.now())
            _audit_schedule(actor, Action.SCHEDULE_CREATE, task, after=schedule_snapshot(task))
            schedules_changed()
    except IntegrityError:
        # A parallel create won the unique name between our check and our insert.
        if PeriodicTask.objects.filter(name=job.name).exists():
            raise WriteRefused(
                "job", f"{job.name} already has a schedule; update it instead"
            ) from None
        raise
    return task, preview


@transaction.atomic
def schedule_update(
    *,
    actor: Actor,
    task: PeriodicTask,
    cron: Cron | None = None,
    offset: int | None = None,
    enabled: bool | None = None,
    queue: str | None = None,
    priority: int | None = None,
    toggle: bool = False,
    dry_run: bool = False,
) -> tuple[PeriodicTask, Preview]:
    """Change what operators own; `dry_run` answers the preview and writes nothing.

    `toggle` flips `enabled` as it is under the lock, so two parallel toggles are two flips.
    """
    # No join in the locking read: after waiting for a parallel writer, PostgreSQL re-checks the
    # locked row but keeps the joined rows of its old snapshot, so a crontab that writer just
    # created would come back as NULL. `task.crontab` is read afterwards, in a fresh snapshot.
    task = _locked(task.pk)
    stored = JobSchedule.objects.filter(periodic_task=task).first()
    new_offset = (
        check_offset(offset) if offset is not None else getattr(stored, "offset_seconds", 0)
    )
    new_queue = _check_queue(queue) if queue is not None else task.queue
    new_priority = _check_priority(priority) if priority is not None else task.priority
    if toggle:
        enabled = not task.enabled
    new_enabled = task.enabled if enabled is None else bool(enabled)
    current_cron = Cron.from_model(task.crontab) if task.crontab_id else None
    new_cron = cron or current_cron
    if new_cron is None:
        raise WriteRefused("cron", "this schedule has no crontab; give one")
    preview = schedule_preview(
        name=task.name, cron=new_cron, offset=new_offset, enabled=new_enabled
    )
    if dry_run:
        return task, preview
    before = schedule_snapshot(task)
    now = timezone.now()
    slots_moved = new_enabled and not task.enabled  # switched on
    if new_cron != current_cron:
        task.crontab = crontab_for(new_cron)
        slots_moved = True
    if task.enabled and not new_enabled:
        task.last_run_at = None  # as django-celery-beat's disable: no catch-up when re-enabled
    task.enabled = new_enabled
    task.queue = new_queue
    task.priority = new_priority
    task.save()
    _offset_save(task, stored, new_offset, slots_moved=slots_moved, now=now)
    after = schedule_snapshot(task)
    if after != before:
        _audit_schedule(actor, Action.SCHEDULE_UPDATE, task, before=before, after=after)
    # After the offset row too: beat re-reads entries (and their offsets) when this moves.
    schedules_changed()
    return task, preview


def _offset_save(
    task: PeriodicTask,
    stored: JobSchedule | None,
    offset: int | None,
    *,
    slots_moved: bool,
    now: datetime,
) -> None:
    """The offset row of a saved task: created when missing, tracking restarted when its slots
    moved (switched on, new cron) or its offset changed. `offset` None keeps the stored one."""
    if stored is None:
        _job_schedule_create(task, 0 if offset is None else offset, now)
        return
    if offset is not None and stored.offset_seconds != offset:
        stored.offset_seconds = check_offset(offset)
        slots_moved = True
    if slots_moved:
        schedule_tracking_restart(stored, now)
        stored.save(update_fields=["offset_seconds", "tracked_since", "reconciled_until"])


@transaction.atomic
def schedule_save(*, actor: Actor, task: PeriodicTask, offset: int | None) -> PeriodicTask:
    """Save a schedule edited as a whole — the admin's change form: the `PeriodicTask` as the
    form left it (not saved yet), and its offset (None: keep the stored one, 0 for a new row).
    A crontab the form validated unsaved (a typed cron, `crontab_unsaved`) is written here, as
    an existing row for the same cron when there is one (`crontab_for`).

    Slot tracking restarts when the schedule is new or switched on, or its crontab or offset
    changed; one audit row (create, or update when anything operators own changed).
    """
    now = timezone.now()
    if offset is not None:
        check_offset(offset)
    previous = _locked(task.pk) if task.pk is not None else None  # as stored, locked
    before = schedule_snapshot(previous) if previous is not None else None
    stored = JobSchedule.objects.filter(periodic_task_id=task.pk).first() if previous else None
    crontab = schedule_crontab(task)
    if crontab is not None and crontab.pk is None:
        task.crontab = crontab_for(Cron.from_model(crontab))
    task.save()
    slots_moved = previous is not None and (
        (task.enabled and not previous.enabled) or task.crontab_id != previous.crontab_id
    )
    _offset_save(task, stored, offset, slots_moved=slots_moved, now=now)
    after = schedule_snapshot(task)
    if after != before:
        action = Action.SCHEDULE_CREATE if previous is None else Action.SCHEDULE_UPDATE
        _audit_schedule(actor, action, task, before=before, after=after)
    schedules_changed()
    return task


@transaction.atomic
def schedule_delete(*, actor: Actor, task: PeriodicTask) -> None:
    """Remove a schedule; its run history stays in the ledger."""
    # Locked first, like an update: the cascade would otherwise lock JobSchedule before it.
    task = _locked(task.pk)
    _delete_audited(actor, task)
    schedules_changed()


def _delete_audited(actor: Actor, task: PeriodicTask) -> None:
    before = schedule_snapshot(task)
    pk = task.pk
    task.delete()
    task.pk = pk  # the audit row names it
    _audit_schedule(actor, Action.SCHEDULE_DELETE, task, before=before)


# ---------------------------------------------------------------------------------------------
# Many schedules: enable, disable, toggle
# ---------------------------------------------------------------------------------------------


@transaction.atomic
def schedules_set_enabled(
    *, actor: Actor, tasks: QuerySet[PeriodicTask], enabled: bool, reason: str = ""
) -> int:
    """Bulk enable/disable (admin actions, the per-job page, API toggle) with one audit row per
    schedule changed; `reason` (the per-job page's note: why) goes into each of those rows.

    A bulk `.update()` skips model signals: this tells beat itself and restarts slot tracking
    of the schedules switched on.
    """
    # The caller's queryset may carry joins (the admin's does); lock plain rows by id.
    ids = list(tasks.values_list("pk", flat=True))
    targets = list(
        PeriodicTask.objects.select_for_update()
        .filter(pk__in=ids, enabled=not enabled)
        .order_by("pk")
    )
    if not targets:
        return 0
    befores = {task.pk: schedule_snapshot(task) for task in targets}
    ids = list(befores)
    fields: dict[str, Any] = {"enabled": enabled}
    if not enabled:
        fields["last_run_at"] = None  # as django-celery-beat's own disable action
    PeriodicTask.objects.filter(pk__in=ids).update(**fields)
    if enabled:
        schedules_tracking_restart(task_ids=ids, now=timezone.now())
    for task in PeriodicTask.objects.filter(pk__in=ids):
        _audit_schedule(
            actor,
            Action.SCHEDULE_ENABLE if enabled else Action.SCHEDULE_DISABLE,
            task,
            before=befores[task.pk],
            after=schedule_snapshot(task),
            reason=reason,
        )
    schedules_changed()
    return len(ids)


@transaction.atomic
def schedules_toggle(*, actor: Actor, tasks: QuerySet[PeriodicTask]) -> int:
    """Switch each schedule: the enabled ones off, the others on; how many switched."""
    # Every row locked first, in pk order, so "which are on" is read under the lock.
    chosen = list(tasks.values_list("pk", flat=True))
    ids = list(
        PeriodicTask.objects.select_for_update()
        .filter(pk__in=chosen)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    on = list(PeriodicTask.objects.filter(pk__in=ids, enabled=True).values_list("pk", flat=True))
    switched = schedules_set_enabled(
        actor=actor, tasks=PeriodicTask.objects.filter(pk__in=on), enabled=False
    )
    switched += schedules_set_enabled(
        actor=actor, tasks=PeriodicTask.objects.filter(pk__in=ids).exclude(pk__in=on), enabled=True
    )
    return switched


# ---------------------------------------------------------------------------------------------
# Crontab rows (django-celery-beat's CrontabSchedule admin): shared by schedules
# ---------------------------------------------------------------------------------------------


def crontab_for(cron: Cron) -> CrontabSchedule:
    """A CrontabSchedule row for `cron`, reused when one exists.

    Not `get_or_create`: the table has no unique constraint, so two parallel writers can both
    create one, and `get_or_create`'s `get` then raises MultipleObjectsReturned for ever after.
    """
    fields = crontab_fields(cron)
    existing = CrontabSchedule.objects.filter(**fields).order_by("pk").first()
    return existing or CrontabSchedule.objects.create(**fields)


def _cron_text(crontab: CrontabSchedule) -> str:
    return str(Cron.from_model(crontab))


@transaction.atomic
def crontab_save(*, actor: Actor, crontab: CrontabSchedule) -> CrontabSchedule:
    """Save a crontab row as edited. A row may be shared: every schedule on it now fires at
    other times, so each one's slot tracking restarts (a message queued under the old cron is
    then superseded, not refused) and each gets a schedule.update audit row, besides the
    crontab's own row."""
    now = timezone.now()
    tasks: list[PeriodicTask] = []
    before_cron = None
    if crontab.pk is not None:
        tasks = list(
            PeriodicTask.objects.select_for_update().filter(crontab_id=crontab.pk).order_by("pk")
        )
        stored = CrontabSchedule.objects.filter(pk=crontab.pk).first()
        before_cron = _cron_text(stored) if stored is not None else None
    befores = {task.pk: schedule_snapshot(task) for task in tasks}
    crontab.save()
    after_cron = _cron_text(crontab)
    if after_cron != before_cron:
        schedules_tracking_restart(task_ids=befores, now=now)
        for task in tasks:
            _audit_schedule(
                actor,
                Action.SCHEDULE_UPDATE,
                task,
                before=befores[task.pk],
                after=schedule_snapshot(task),
            )
        audit_record(
            actor=actor,
            action=Action.CRONTAB_SAVE,
            object_type="crontab",
            object_id=crontab.pk,
            object_repr=after_cron,
            before=None if before_cron is None else {"cron": before_cron},
            after={"cron": after_cron, "schedules": [task.name for task in tasks]},
        )
    schedules_changed()
    return crontab


@transaction.atomic
def crontab_delete(*, actor: Actor, crontab: CrontabSchedule) -> list[str]:
    """Delete a crontab row; the schedules on it go with it (django-celery-beat cascades), each
    through `schedule_delete` so each is audited. Returns their names."""
    tasks = list(
        PeriodicTask.objects.select_for_update().filter(crontab_id=crontab.pk).order_by("pk")
    )
    for task in tasks:
        _delete_audited(actor, task)
    cron = _cron_text(crontab)
    pk = crontab.pk
    crontab.delete()
    audit_record(
        actor=actor,
        action=Action.CRONTAB_DELETE,
        object_type="crontab",
        object_id=pk,
        object_repr=cron,
        before={"cron": cron, "schedules": [task.name for task in tasks]},
    )
    schedules_changed()
    return [task.name for task in tasks]


# ---------------------------------------------------------------------------------------------
# The registry's jobs as schedules: `manage.py schedules apply|remove`
# ---------------------------------------------------------------------------------------------


@dataclass
class Change:
    job: str
    action: str  # created, updated, unchanged, kept
    details: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        extra = f" ({'; '.join(self.details)})" if self.details else ""
        return f"{self.action:9} {self.job}{extra}"


@transaction.atomic
def schedules_apply(
    *, actor: Actor, profile: str = "production", reset: bool = False
) -> list[Change]:
    """Make every registered job a PeriodicTask on its cron with its offset; idempotent.

    Upserts: never deletes run history or `last_run_at`, and keeps what staff changed in the
    admin (cron, offset, enabled) unless `reset=True`. One audit row per schedule created or
    changed, by `actor`: `Actor.cli` for `schedules apply`, `Actor.system(name)` for code that is
    no interface (test fixtures, benchmarks), so that every schedule write leaves its row.
    """
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
            _job_schedule_create(task, offset, now)
            _audit_schedule(actor, Action.SCHEDULE_CREATE, task, after=schedule_snapshot(task))
            changes.append(Change(job.name, "created", [f"{cron.six_field(offset)}"]))
            continue
        changes.append(_apply_one(actor, task, job, cron, offset, reset=reset, now=now))
    schedules_changed()
    return changes


def _apply_one(
    actor: Actor, task: PeriodicTask, job: Job, cron: Cron, offset: int, *, reset: bool, now
) -> Change:
    details: list[str] = []
    before = schedule_snapshot(task)
    schedule = JobSchedule.objects.filter(periodic_task=task).first()
    if schedule is None:
        schedule = _job_schedule_create(task, offset, now)
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
        schedule_tracking_restart(schedule, now)
    elif current != cron:
        details.append(f"cron {current} kept (staff edit; --reset restores {cron})")
    if schedule.offset_seconds != offset and reset:
        details.append(f"offset: {schedule.offset_seconds} -> {offset}")
        schedule.offset_seconds = offset
        schedule_tracking_restart(schedule, now)
    elif schedule.offset_seconds != offset:
        details.append(f"offset {schedule.offset_seconds} kept (--reset restores {offset})")
    if reset and not task.enabled:
        details.append("enabled")
        task.enabled = True
        schedule_tracking_restart(schedule, now)
    changed = [d for d in details if " kept " not in d]
    if changed:
        task.save()
        schedule.save()
        _audit_schedule(
            actor, Action.SCHEDULE_UPDATE, task, before=before, after=schedule_snapshot(task)
        )
    return Change(job.name, "updated" if changed else "unchanged", details)


@transaction.atomic
def schedules_remove(*, actor: Actor, names: list[str] | None = None) -> list[str]:
    """Delete the PeriodicTasks of these jobs (all registered jobs when None); runs stay. One
    audit row per schedule removed, by `actor`."""
    wanted = names if names is not None else [job.name for job in all_jobs()]
    tasks = list(PeriodicTask.objects.select_for_update().filter(name__in=wanted).order_by("pk"))
    for task in tasks:
        _delete_audited(actor, task)
    schedules_changed()
    return sorted(task.name for task in tasks)
