"""What a worker trusts: a job message is checked against the schedule and the ledger first.

Anyone who can write to the broker (any Redis client, Flower's send-task API, `celery call`) can
send a job's task with any kwargs, and the message's slot becomes the service's `now`. So before
a job message runs (`JobTask.run_job`), and before an expired one is recorded, it must name:

- a slot no later than the worker's clock plus FUTURE_TOLERANCE;
- for trigger `beat`: a fire time of one of the job's enabled crontab schedules plus its offset,
  as stored now (the same `Cron` and `effective_offset` beat and the reconciler use), attempt 1
  and no run, user or reason (beat sends none: a schedule may not name them either);
- for any other trigger (admin, api, manual, retry, reconciler): the ledger row `job_dispatch`
  wrote before it sent the message, with the same job, slot and task id (and run id, user and
  reason when the message names them). The row is `queued` on the first delivery; a redelivery
  of the same message, or the task's own retry (Celery keeps the task id), finds it running,
  lost or retrying, and the run path's claim decides as before.

Anything else is refused: recorded as a `refused` JobRun whose `error` says why, and nothing runs.
A refused row claims nothing (`JobRun.SLOT_OWNERS`), so a forged message naming a real future
slot does not keep the real run out of it. What the message claimed about a user and a reason is
not trusted enough to be stored in those columns; it is quoted in `error`.

`manage.py runjob --sync` calls the run path in-process, with no message, so nothing to check.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from scheduler.cron import Cron, CronError
from scheduler.models import JobRun
from scheduler.services.runs import Delivery
from scheduler.services.schedules import effective_offset

Status = JobRun.Status
# How far ahead of the worker's clock a slot may lie. Beat's messages carry an absolute ETA equal
# to their slot, so a worker starts them at or after it on its own clock; a dispatched run's slot
# is the web host's clock, floored to the second. 5 s covers clock skew between NTP-synced hosts
# (milliseconds) with a wide margin, and is far below the smallest gap between two fire times (a
# minute) and any period a money job closes, so it cannot move a run into a later slot; and the
# run path never gives a service a `now` past the wall clock (`job_execute`).
FUTURE_TOLERANCE = timedelta(seconds=5)


def delivery_refusal(delivery: Delivery, *, now: datetime) -> str | None:
    """Why this job message must not run, or None when it names a really due slot."""
    if delivery.slot > now + FUTURE_TOLERANCE:
        return (
            f"slot {delivery.slot.isoformat()} lies in the future "
            f"({(delivery.slot - now).total_seconds():.0f} s after the worker's clock)"
        )
    if delivery.trigger == JobRun.Trigger.BEAT:
        return _beat_refusal(delivery)
    if delivery.trigger not in JobRun.Trigger.values:
        return f"trigger {delivery.trigger!r} is not one of {', '.join(JobRun.Trigger.values)}"
    return _dispatched_refusal(delivery)


def _beat_refusal(delivery: Delivery) -> str | None:
    if delivery.run_id is not None or delivery.user_id is not None or delivery.reason:
        return "a beat message names no run, user or reason; this one does"
    if delivery.attempt != 1:
        return f"a beat message is attempt 1; this one says {delivery.attempt}"
    schedules = PeriodicTask.objects.filter(
        task=delivery.job.task, enabled=True, crontab__isnull=False
    ).select_related("crontab", "job_schedule")
    # The row `schedules apply` made is named after the job: found by its unique index. Other
    # rows of the job (staff may add some) need a scan of the table (~7 ms at 10,000 schedules),
    # which only their own runs and refused messages pay.
    named = delivery.job.name
    for rows in (schedules.filter(name=named), schedules.exclude(name=named)):
        for schedule in rows:
            stored = getattr(getattr(schedule, "job_schedule", None), "offset_seconds", 0)
            boundary = delivery.slot - timedelta(seconds=effective_offset(stored))
            try:
                if Cron.from_model(schedule.crontab).fires_at(boundary):
                    return None
            except CronError:
                continue  # a broken crontab row fires nothing (beat leaves it out too)
    return (
        f"slot {delivery.slot.isoformat()} is not a fire time plus offset of any enabled "
        f"schedule of job {delivery.job.name!r}"
    )


def _dispatched_refusal(delivery: Delivery) -> str | None:
    rows = JobRun.objects.filter(
        JobRun.SLOT_OWNERS,
        job=delivery.job.name,
        slot=delivery.slot,
        task_id=delivery.task_id,
    )
    if delivery.run_id is not None:
        rows = rows.filter(pk=delivery.run_id)
    row = rows.order_by("-attempt").only("user_id", "reason").first()
    if row is None or not delivery.task_id:
        return (
            f"no ledger row for job {delivery.job.name!r}, slot {delivery.slot.isoformat()} and "
            "this task id: a run other than beat's is sent only by job_dispatch (admin, API, "
            "runjob, retry, reconciler), which writes that row first"
        )
    if delivery.user_id not in (None, row.user_id) or delivery.reason not in ("", row.reason):
        return f"user or reason differ from those of run {row.pk}, which this message names"
    return None


def delivery_refuse(delivery: Delivery, *, error: str, now: datetime | None = None) -> JobRun:
    """Record a refused delivery; it claims no slot and runs nothing."""
    claimed = ""
    if delivery.user_id is not None or delivery.reason:
        claimed = f" (the message claimed user {delivery.user_id!r}, reason {delivery.reason!r})"
    trigger = delivery.trigger
    if trigger not in JobRun.Trigger.values:
        trigger = JobRun.Trigger.MANUAL  # not beat, whatever it is; the value is in `error`
    return JobRun.objects.create(
        job=delivery.job.name,
        slot=delivery.slot,
        attempt=min(max(delivery.attempt, 1), 32767),
        status=Status.REFUSED,
        trigger=trigger,
        task_id=delivery.task_id[:255],
        worker=delivery.worker[:255],
        finished_at=now or timezone.now(),
        error=f"refused: {error}{claimed}"[:4000],
    )


def delivery_admit(delivery: Delivery) -> JobRun | None:
    """None when the message may run; otherwise its `refused` ledger row."""
    now = timezone.now()
    error = delivery_refusal(delivery, now=now)
    if error is None:
        return None
    return delivery_refuse(delivery, error=error, now=now)
