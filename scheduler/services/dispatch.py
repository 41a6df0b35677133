"""Sending a job outside beat: manual runs (admin, API, `runjob`) and the reconciler's re-sends.

The ledger row is written first (status `queued`, with who asked and why), the message is sent
after the transaction commits, and the worker picks the row up through the same run path.
"""

from __future__ import annotations

from datetime import datetime

from celery import current_app as app
from django.db import IntegrityError, transaction
from django.utils import timezone

from scheduler.ledger import run_duplicate, run_queue
from scheduler.models import JobRun
from scheduler.registry import Job
from scheduler.services.runs import new_task_id, slot_of


def job_dispatch(
    *,
    job: Job,
    slot: datetime,
    trigger: str,
    attempt: int = 1,
    user_id: int | None = None,
    reason: str = "",
    start_at: datetime | None = None,
) -> JobRun:
    """Queue one run of `job` for `slot`; a slot already claimed yields a duplicate row.

    `start_at`: when the message is to start (a countdown from now); default at once."""
    task_id = new_task_id()
    try:
        with transaction.atomic():
            run = run_queue(
                job=job.name,
                slot=slot,
                attempt=attempt,
                trigger=trigger,
                user_id=user_id,
                reason=reason,
                task_id=task_id,
            )
    except IntegrityError:
        owner = (
            JobRun.objects.filter(JobRun.SLOT_OWNERS, job=job.name, slot=slot)
            .order_by("-attempt")
            .first()
        )
        return run_duplicate(
            owner=owner,
            job=job.name,
            slot=slot,
            attempt=attempt,
            trigger=trigger,
            user_id=user_id,
            reason=reason,
            why=f"slot already {owner.status if owner else 'taken'}",
        )
    kwargs = {
        "slot": slot.isoformat(),
        "trigger": trigger,
        "attempt": attempt,
        "run_id": run.pk,
        "user_id": user_id,
        "reason": reason,
    }

    def send() -> None:
        options: dict[str, object] = {"queue": job.queue, "priority": job.priority}
        if start_at is not None:  # counted from the send, after the commit
            options["countdown"] = max(0.0, (start_at - timezone.now()).total_seconds())
        app.send_task(job.task, kwargs=kwargs, task_id=task_id, **options)

    transaction.on_commit(send)
    return run


def job_trigger(*, job: Job, trigger: str, user_id: int | None = None, reason: str = "") -> JobRun:
    """A manual run now: its slot is the second it was asked for."""
    return job_dispatch(
        job=job, slot=slot_of(timezone.now()), trigger=trigger, user_id=user_id, reason=reason
    )
