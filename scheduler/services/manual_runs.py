"""Runs operators ask for — run now (queued or inline) and retry — each with its audit row.

They go through the scheduler's own run path (`job_trigger`, `job_dispatch`, `job_execute`):
offsets, the slot claim, the lease and the ledger all apply. The admin, the per-job page, the
ops API and `manage.py runjob` call these with their `Actor`.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from scheduler.audit import Actor, audit_record
from scheduler.ledger import RETRYABLE
from scheduler.models import AuditEvent, JobRun
from scheduler.registry import Job, find_job, job_for_task
from scheduler.services.dispatch import job_dispatch, job_trigger
from scheduler.services.runs import Delivery, job_execute, new_task_id, slot_of
from scheduler.services.writes import job_of
from scheduler.validators import WriteRefused


def _trigger_of(actor: Actor) -> str:
    return {"admin": JobRun.Trigger.ADMIN, "api": JobRun.Trigger.API}.get(
        actor.via, JobRun.Trigger.MANUAL
    )


def _ledger_reason(actor: Actor, reason: str) -> str:
    """ "<who and from where>: <reason>", in the ledger's one 255-char column, or refused."""
    why = actor.describe() + (f": {reason}" if reason else "")
    limit = JobRun._meta.get_field("reason").max_length or 255
    if len(why) > limit:
        room = max(limit - len(actor.describe()) - 2, 0)
        raise WriteRefused("reason", f"at most {room} characters for this caller")
    return why


def _audit_run(actor: Actor, job: Job, run: JobRun, reason: str) -> None:
    audit_record(
        actor=actor,
        action=AuditEvent.Action.JOB_RUN,
        object_type="job",
        object_id=run.pk,
        object_repr=job.name,
        after={"run_id": run.pk, "status": run.status, "slot": run.slot.isoformat()},
        reason=reason,
    )


@transaction.atomic
def job_run_now(*, actor: Actor, job_name: str, reason: str = "") -> JobRun:
    """A manual run through the run path; the message leaves after this transaction commits."""
    job = job_of(job_name)
    why = _ledger_reason(actor, reason)
    run = job_trigger(job=job, trigger=_trigger_of(actor), user_id=actor.user_id, reason=why)
    _audit_run(actor, job, run, reason)
    return run


def job_run_inline(
    *, actor: Actor, job_name: str, reason: str = "", worker: str = "inline"
) -> JobRun:
    """A manual run executed here and now (`runjob --sync`), through the same claim, lease and
    ledger as a worker's; returns the run as it ended. `worker` is the ledger's worker column.

    The audit row follows the run, in its own transaction: the run commits its claim and lease
    as it goes (other workers must see them), so no one transaction can hold both.
    """
    job = job_of(job_name)
    why = _ledger_reason(actor, reason)
    delivery = Delivery(
        job=job,
        slot=slot_of(timezone.now()),
        trigger=_trigger_of(actor),
        task_id=f"sync-{new_task_id()}",
        worker=worker,
        user_id=actor.user_id,
        reason=why,
    )
    run = job_execute(delivery).run
    with transaction.atomic():
        _audit_run(actor, job, run, reason)
    return run


def job_run_now_for_task(*, actor: Actor, task: PeriodicTask, reason: str = "") -> JobRun:
    """'Run now' on a schedule row: the job is the one registered for its Celery task."""
    job = job_for_task(task.task)  # as beat does: the task, not the row's name, says the job
    if job is None:
        raise WriteRefused("job", f"{task.name} runs {task.task!r}, which is not a registered job")
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
        except WriteRefused as exc:
            results.append(RetryResult(run_id=run_id, error=exc.message))
    return results


def _retry_one(actor: Actor, run_id: int, reason: str) -> RetryResult:
    run = JobRun.objects.filter(pk=run_id).first()
    if run is None:
        raise WriteRefused("ids", f"run {run_id} does not exist")
    if run.status not in RETRYABLE:
        raise WriteRefused(
            "ids",
            f"run {run_id} is {run.status}; only failed, lost, missed or expired runs are retried",
        )
    job = find_job(run.job)
    if job is None:
        raise WriteRefused("ids", f"run {run_id}: job {run.job!r} is no longer registered")
    latest = (
        JobRun.objects.select_for_update()
        .filter(JobRun.SLOT_OWNERS, job=run.job, slot=run.slot)
        .order_by("-attempt")
        .first()
    )
    if latest is not None and latest.pk != run.pk and latest.status not in RETRYABLE:
        raise WriteRefused(
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
