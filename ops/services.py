"""Operators' writes: schedule changes, manual runs and retries, each with its audit row.

The admin and the API are thin interfaces over these functions, so both validate the same way,
write the same audit rows and tell beat about a change the same way. Refused input raises
`OpsError` naming the field, before anything is written. Runs go through the scheduler's own run
path (`job_trigger`, `job_dispatch`): offsets, the slot claim, the lease and the ledger all apply.

Lock order, the same in every schedule write so that parallel writes wait instead of deadlocking:
the `PeriodicTask` rows first (one `select_for_update`, ascending pk, no joins), then their
`JobSchedule` rows, then django-celery-beat's `PeriodicTasks` change marker (its signals and
`update_changed`). A schedule deleted by a parallel request raises `PeriodicTask.DoesNotExist`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask, PeriodicTasks

from ops.models import AuditEvent
from scheduler.collisions import Collision, Planned, analyse
from scheduler.cron import Cron, CronError
from scheduler.models import JobRun, JobSchedule
from scheduler.registry import QUEUES, Job, find_job, job_for_task
from scheduler.selectors import next_starts as next_slots
from scheduler.services.dispatch import job_dispatch, job_trigger
from scheduler.services.schedules import crontab_for, effective_offset, enabled_plans

OFFSET_ERROR = "The offset must be a whole number of seconds between 0 and 59."
RETRYABLE = frozenset(
    {JobRun.Status.FAILED, JobRun.Status.LOST, JobRun.Status.MISSED, JobRun.Status.EXPIRED}
)


class OpsError(ValueError):
    """Input refused before anything was written; `field` names what was wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Actor:
    """Who asks, from where, through which interface (admin, api, cli)."""

    user_id: int | None
    username: str
    ip: str | None
    via: str

    @classmethod
    def from_request(cls, request: HttpRequest, *, via: str) -> Actor:
        user = getattr(request, "user", None)
        authenticated = user is not None and user.is_authenticated
        return cls(
            user_id=user.pk if authenticated else None,
            username=user.get_username() if authenticated else "",
            ip=client_ip(request),
            via=via,
        )

    def describe(self) -> str:
        return f"{self.via} by {self.username or 'anonymous'} from {self.ip or 'unknown address'}"


def client_ip(request: HttpRequest) -> str | None:
    """REMOTE_ADDR, or the proxy's X-Forwarded-For entry when OPS_TRUSTED_PROXIES > 0.

    Only the entries our own proxies appended can be trusted, so with N proxies the address is
    the N-th from the right; anything further left is whatever the client chose to send. The
    entry must be an IP address, with a port (`1.2.3.4:5678`, `[2001:db8::1]:443`) tolerated and
    dropped; anything else (`not-an-ip`) is not an address, and REMOTE_ADDR is recorded instead.
    """
    proxies = settings.OPS_TRUSTED_PROXIES
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies and forwarded:
        hops = [hop.strip() for hop in forwarded.split(",")]
        if len(hops) >= proxies and (address := ip_address_of(hops[-proxies])):
            return address
    return ip_address_of(request.META.get("REMOTE_ADDR", ""))


def ip_address_of(text: str) -> str | None:
    """`text` as a normalised IP address (port and IPv6 zone stripped), or None if it is none."""
    text = text.strip()
    if text.startswith("["):  # [v6]:port or [v6]
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # v4:port; a bare v6 address has two or more colons
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])  # PostgreSQL's inet takes no zone
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:1.2.3.4 is the client 1.2.3.4
    return str(mapped or address)


def audit_record(
    *,
    actor: Actor,
    action: str,
    object_type: str,
    object_repr: str,
    object_id: object = "",
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    reason: str = "",
) -> AuditEvent:
    return AuditEvent.objects.create(
        user_id=actor.user_id,
        username=actor.username,
        ip=actor.ip,
        via=actor.via,
        action=action,
        object_type=object_type,
        object_id=str(object_id or ""),
        object_repr=object_repr[:200],
        before=before,
        after=after,
        reason=reason[:255],
    )


# ---------------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------------


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


@dataclass
class Preview:
    """A schedule as it would be: its next starts and the jobs it would start together with."""

    job: str
    cron: str
    offset: int
    enabled: bool
    next_runs: list[datetime]
    collisions: list[Collision] = field(default_factory=list)  # that include this job
    new_partners: list[str] = field(default_factory=list)  # colliding now, not before

    @property
    def six_field(self) -> str:
        return f"{effective_offset(self.offset)} {self.cron}"

    def warning(self) -> str:
        if not self.new_partners:
            return ""
        first = min(c.first for c in self.collisions)
        return (
            f"{self.job} would start in the same second as {', '.join(self.new_partners)} "
            f"(first at {first:%a %H:%M:%S} UTC); choose another offset or minute"
        )


def _partners(name: str, collisions: list[Collision]) -> set[str]:
    return {job for c in collisions if name in c.jobs for job in c.jobs if job != name}


def schedule_preview(
    *, name: str, cron: Cron, offset: int, enabled: bool, now: datetime | None = None
) -> Preview:
    """Next starts and collisions of `name` if it had this cron/offset/enabled; writes nothing.

    Collisions come from `scheduler.collisions.analyse` over a week of real fire times of every
    enabled schedule, so two jobs with different offsets never collide and two with the same
    offset collide only if their minutes meet.
    """
    now = now or timezone.now()
    current = enabled_plans()
    before = analyse(current, start=now.date())
    others = [plan for plan in current if plan.name != name]
    collisions: list[Collision] = []
    if enabled:
        after = analyse([*others, Planned(name, cron, effective_offset(offset))], start=now.date())
        collisions = [c for c in after.collisions if name in c.jobs]
    fresh = _partners(name, collisions) - _partners(name, before.collisions)
    return Preview(
        job=name,
        cron=str(cron),
        offset=offset,
        enabled=enabled,
        next_runs=next_slots(cron, offset, now=now) if enabled else [],
        collisions=collisions,
        new_partners=sorted(fresh),
    )


def parse_cron(value: object) -> Cron:
    if not isinstance(value, str):
        raise OpsError("cron", "must be a string: five fields or @hourly/@daily/...")
    try:
        return Cron.parse(value)
    except CronError as exc:
        raise OpsError("cron", str(exc)) from None


def check_offset(value: object) -> int:
    # bool is an int in Python; `true` is not an offset.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 59:
        raise OpsError("offset", OFFSET_ERROR)
    return value


def _check_queue(value: object) -> str:
    if value not in QUEUES:
        raise OpsError("queue", f"must be one of {', '.join(QUEUES)}")
    return str(value)


def _check_priority(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 9:
        raise OpsError("priority", "must be a whole number between 0 (highest) and 9")
    return value


def _job_of(name: object) -> Job:
    job = find_job(name) if isinstance(name, str) else None
    if job is None:
        raise OpsError("job", f"unknown job {name!r}")
    return job


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
    job = _job_of(job_name)
    offset = check_offset(offset)
    queue = _check_queue(queue if queue is not None else job.queue)
    priority = _check_priority(priority if priority is not None else job.priority)
    if PeriodicTask.objects.filter(name=job.name).exists():
        raise OpsError("job", f"{job.name} already has a schedule; update it instead")
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
            JobSchedule.objects.create(
                periodic_task=task, offset_seconds=offset, tracked_since=timezone.now()
            )
            audit_record(
                actor=actor,
                action=AuditEvent.Action.SCHEDULE_CREATE,
                object_type="schedule",
                object_id=task.pk,
                object_repr=task.name,
                after=schedule_snapshot(task),
            )
            PeriodicTasks.update_changed()
    except IntegrityError:
        # A parallel create won the unique name between our check and our insert.
        if PeriodicTask.objects.filter(name=job.name).exists():
            raise OpsError("job", f"{job.name} already has a schedule; update it instead") from None
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
        raise OpsError("cron", "this schedule has no crontab; give one")
    preview = schedule_preview(
        name=task.name, cron=new_cron, offset=new_offset, enabled=new_enabled
    )
    if dry_run:
        return task, preview
    before = schedule_snapshot(task)
    now = timezone.now()
    if new_cron != current_cron:
        task.crontab = crontab_for(new_cron)
    if task.enabled and not new_enabled:
        task.last_run_at = None  # as django-celery-beat's disable: no catch-up when re-enabled
    task.enabled = new_enabled
    task.queue = new_queue
    task.priority = new_priority
    task.save()  # its signals mark the change for beat and restart slot tracking
    if stored is None:
        JobSchedule.objects.create(periodic_task=task, offset_seconds=new_offset, tracked_since=now)
    elif stored.offset_seconds != new_offset:
        _offset_changed(stored, new_offset, now)
    after = schedule_snapshot(task)
    if after != before:
        audit_record(
            actor=actor,
            action=AuditEvent.Action.SCHEDULE_UPDATE,
            object_type="schedule",
            object_id=task.pk,
            object_repr=task.name,
            before=before,
            after=after,
        )
    # After the offset row too: beat re-reads entries (and their offsets) when this moves.
    PeriodicTasks.update_changed()
    return task, preview


def _offset_changed(stored: JobSchedule, offset: int, now: datetime) -> None:
    """New offset, new slots: the reconciler must not look for old-offset slots as missing."""
    stored.offset_seconds = offset
    stored.tracked_since = now
    stored.reconciled_until = None
    stored.save(update_fields=["offset_seconds", "tracked_since", "reconciled_until"])


def _locked(pk: int) -> PeriodicTask:
    """The schedule's row, locked: the first lock every schedule write takes (see above)."""
    return PeriodicTask.objects.select_for_update().get(pk=pk)


@transaction.atomic
def schedule_delete(*, actor: Actor, task: PeriodicTask) -> None:
    """Remove a schedule; its run history stays in the ledger."""
    # Locked first, like an update: the cascade would otherwise lock JobSchedule before it.
    task = _locked(task.pk)
    before = schedule_snapshot(task)
    pk, name = task.pk, task.name
    task.delete()
    audit_record(
        actor=actor,
        action=AuditEvent.Action.SCHEDULE_DELETE,
        object_type="schedule",
        object_id=pk,
        object_repr=name,
        before=before,
    )
    PeriodicTasks.update_changed()


@transaction.atomic
def schedules_set_enabled(
    *, actor: Actor, tasks: QuerySet[PeriodicTask], enabled: bool, reason: str = ""
) -> int:
    """Bulk enable/disable (admin actions, API toggle) with one audit row per schedule changed;
    `reason` (the per-job page's note: why) goes into each of those rows.

    A bulk `.update()` skips model signals, so this does what they would have done: tell beat
    (`PeriodicTasks.update_changed`) and restart slot tracking of schedules switched on.
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
        JobSchedule.objects.filter(periodic_task_id__in=ids).update(
            tracked_since=timezone.now(), reconciled_until=None
        )
    for task in PeriodicTask.objects.filter(pk__in=ids):
        audit_record(
            actor=actor,
            action=AuditEvent.Action.SCHEDULE_ENABLE
            if enabled
            else AuditEvent.Action.SCHEDULE_DISABLE,
            object_type="schedule",
            object_id=task.pk,
            object_repr=task.name,
            before=befores[task.pk],
            after=schedule_snapshot(task),
            reason=reason,
        )
    PeriodicTasks.update_changed()
    return len(ids)


@transaction.atomic
def schedules_toggle(*, actor: Actor, tasks: QuerySet[PeriodicTask]) -> int:
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
# Runs
# ---------------------------------------------------------------------------------------------


def _trigger_of(actor: Actor) -> str:
    return {"admin": JobRun.Trigger.ADMIN, "api": JobRun.Trigger.API}.get(
        actor.via, JobRun.Trigger.MANUAL
    )


@transaction.atomic
def job_run_now(*, actor: Actor, job_name: str, reason: str = "") -> JobRun:
    """A manual run through the run path; the message leaves after this transaction commits."""
    job = _job_of(job_name)
    why = actor.describe() + (f": {reason}" if reason else "")
    limit = JobRun._meta.get_field("reason").max_length
    if len(why) > limit:
        # The ledger keeps "<via> by <user> from <address>: <reason>" in one 255-char column.
        room = max(limit - len(actor.describe()) - 2, 0)
        raise OpsError("reason", f"at most {room} characters for this caller")
    run = job_trigger(job=job, trigger=_trigger_of(actor), user_id=actor.user_id, reason=why)
    audit_record(
        actor=actor,
        action=AuditEvent.Action.JOB_RUN,
        object_type="job",
        object_id=run.pk,
        object_repr=job.name,
        after={"run_id": run.pk, "status": run.status, "slot": run.slot.isoformat()},
        reason=reason,
    )
    return run


def job_run_now_for_task(*, actor: Actor, task: PeriodicTask, reason: str = "") -> JobRun:
    """'Run now' on a schedule row: the job is the one registered for its Celery task."""
    job = job_for_task(task.task)  # as beat does: the task, not the row's name, says the job
    if job is None:
        raise OpsError("job", f"{task.name} runs {task.task!r}, which is not a registered job")
    return job_run_now(actor=actor, job_name=job.name, reason=reason)


@dataclass
class RetryResult:
    run_id: int
    retried: JobRun | None = None
    error: str = ""


def runs_retry(*, actor: Actor, run_ids: list[int], reason: str = "") -> list[RetryResult]:
    """Queue the next attempt of each failed/lost/missed/expired run through `job_dispatch`.

    One result per id, in order; a run that cannot be retried says why and does not stop the
    others. The slot's rows are locked while the next attempt is chosen, so two operators
    retrying the same run get one new attempt and one refusal (or a duplicate row).
    """
    results = []
    for run_id in run_ids:
        try:
            with transaction.atomic():
                results.append(_retry_one(actor, run_id, reason))
        except OpsError as exc:
            results.append(RetryResult(run_id=run_id, error=exc.message))
    return results


def _retry_one(actor: Actor, run_id: int, reason: str) -> RetryResult:
    run = JobRun.objects.filter(pk=run_id).first()
    if run is None:
        raise OpsError("ids", f"run {run_id} does not exist")
    if run.status not in RETRYABLE:
        raise OpsError(
            "ids",
            f"run {run_id} is {run.status}; only failed, lost, missed or expired runs are retried",
        )
    job = find_job(run.job)
    if job is None:
        raise OpsError("ids", f"run {run_id}: job {run.job!r} is no longer registered")
    latest = (
        JobRun.objects.select_for_update()
        .filter(JobRun.SLOT_OWNERS, job=run.job, slot=run.slot)
        .order_by("-attempt")
        .first()
    )
    if latest is not None and latest.pk != run.pk and latest.status not in RETRYABLE:
        raise OpsError(
            "ids", f"run {run_id}: its slot already has attempt {latest.attempt} ({latest.status})"
        )
    attempt = (latest.attempt if latest else run.attempt) + 1
    why = f"retry of run {run.pk} ({actor.describe()})" + (f": {reason}" if reason else "")
    new = job_dispatch(
        job=job,
        slot=run.slot,
        trigger=JobRun.Trigger.RETRY,
        attempt=attempt,
        user_id=actor.user_id,
        reason=why[:255],
    )
    audit_record(
        actor=actor,
        action=AuditEvent.Action.RUN_RETRY,
        object_type="run",
        object_id=run.pk,
        object_repr=f"{run.job} @ {run.slot.isoformat()}",
        before={"run_id": run.pk, "status": run.status, "attempt": run.attempt},
        after={"run_id": new.pk, "status": new.status, "attempt": new.attempt},
        reason=reason,
    )
    return RetryResult(run_id=run.pk, retried=new)
