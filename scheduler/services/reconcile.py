"""The reconciler: every expected slot ends with a ledger row, even when nothing ran it.

Run by the watchdog every 30 s (monitoring.watchdog; callable from the shell). It
- marks `running` rows whose heartbeat went stale (worker died) as `lost`, and sends the job's
  newest lost slot again once, so that it completes;
- for each enabled job, compares the cron's slots since its watermark with the ledger: a slot
  with no row past its grace (beat down, message lost, worker killed while holding a countdown
  message, which Redis then hides for a whole visibility timeout) is sent again once if it is the
  job's newest slot and still within its starting deadline (to start at the job's own second,
  one late start per second: scheduler.services.catchup); older ones are recorded `missed`
  at once (only the newest is ever re-sent), the newest at its deadline;
  a re-send the broker refuses (it is down) leaves no row and does not end the pass;
- marks `queued` rows that never started before their deadline as `missed`.
Everything it writes is guarded by the ledger's unique constraint, so two watchdogs are harmless.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone
from kombu.exceptions import KombuError

from scheduler.conf import reconcile_grace_seconds, reconcile_lookback_seconds
from scheduler.cron import Cron, CronError
from scheduler.ledger import (
    run_is_stale,
    run_lose_stale,
    run_miss_queued,
    run_miss_slot,
    run_unqueue,
)
from scheduler.models import JobRun, JobSchedule
from scheduler.registry import Job, find_job, job_for_task
from scheduler.services.catchup import catch_up_release, catch_up_start
from scheduler.services.dispatch import job_dispatch
from scheduler.services.schedules import effective_offset

logger = logging.getLogger(__name__)
Status = JobRun.Status


def ledger_reconcile(*, now: datetime | None = None) -> dict[str, int]:
    now = now or timezone.now()
    counts = {"lost": 0, "redispatched": 0, "missed": 0}
    _mark_lost(now, counts)
    _stale_queued(now, counts)
    schedules = JobSchedule.objects.filter(periodic_task__enabled=True).select_related(
        "periodic_task__crontab"
    )
    for schedule in schedules:
        job = job_for_task(schedule.periodic_task.task)
        if job is None or schedule.periodic_task.crontab is None:
            continue
        try:
            _account_slots(schedule, job, now, counts)
        except CronError:
            continue  # a bad row is reported by the checks and by beat
    return counts


def _newest_slot(job: Job) -> datetime | None:
    return (
        JobRun.objects.filter(job=job.name)
        # a forged future slot, or a message overtaken by a change, is not the job's newest
        .exclude(status__in=JobRun.NOT_ADMITTED)
        .order_by("-slot")
        .values_list("slot", flat=True)
        .first()
    )


def _mark_lost(now: datetime, counts: dict[str, int]) -> None:
    for run in JobRun.objects.filter(status=Status.RUNNING).order_by("slot"):
        job = find_job(run.job)
        ttl = job.lock_ttl if job else 300
        if not run_is_stale(run, ttl=ttl, now=now) or not run_lose_stale(run, now=now):
            continue
        counts["lost"] += 1
        logger.warning("job %s slot %s attempt %s lost", run.job, run.slot, run.attempt)
        if job is None or job.catch_up != "once" or _newest_slot(job) != run.slot:
            continue
        schedule = (
            JobSchedule.objects.filter(periodic_task__name=job.name)
            .select_related("periodic_task")
            .first()
        )
        reason = "re-sent after a lost attempt"
        if _resend(job, run.slot, schedule, now, attempt=run.attempt + 1, reason=reason):
            counts["redispatched"] += 1


def _resend(
    job: Job,
    slot: datetime,
    schedule: JobSchedule | None,
    now: datetime,
    *,
    attempt: int,
    reason: str,
) -> bool:
    """Queue `slot` of `job` again, to start at the job's own second (one late start per second,
    scheduler.services.catchup); False when it was not sent: left to the job's regular run, past
    its deadline, or refused by the broker.

    The row is committed before the message is sent (job_dispatch). When the broker is down the
    send fails after that commit: the row that would never start is removed again, so that the
    slot is re-sent by a later pass if the broker is back within its starting deadline (and
    recorded missed otherwise), and the pass goes on with the other jobs instead of ending here.
    """
    start_at = catch_up_start(
        schedule_name=schedule.periodic_task.name if schedule else job.name,
        job_name=job.name,
        offset=effective_offset(schedule.offset_seconds) if schedule else slot.second,
        slot=slot,
        deadline=timedelta(seconds=job.starting_deadline),
        now=now,
    )
    if start_at is None:
        return False
    queued: JobRun | None = None
    try:
        with transaction.atomic():
            queued = job_dispatch(
                job=job,
                slot=slot,
                trigger=JobRun.Trigger.RECONCILER,
                attempt=attempt,
                reason=f"{reason}; starts at {start_at:%H:%M:%S}",
                start_at=start_at,
            )
    except KombuError as exc:
        if queued is not None:
            run_unqueue(queued)
        catch_up_release(second=start_at, job_name=job.name, slot=slot)
        logger.warning("job %s slot %s not re-sent, the broker refused it: %s", job.name, slot, exc)
        return False
    return True


def _stale_queued(now: datetime, counts: dict[str, int]) -> None:
    for run in JobRun.objects.filter(status=Status.QUEUED):
        job = find_job(run.job)
        deadline = timedelta(
            seconds=(job.starting_deadline if job else 300) + reconcile_grace_seconds()
        )
        if run.created_at < now - deadline and run.slot < now - deadline:
            counts["missed"] += run_miss_queued(run, now=now)


def _account_slots(schedule: JobSchedule, job: Job, now: datetime, counts: dict[str, int]) -> None:
    cron = Cron.from_model(schedule.periodic_task.crontab)
    offset = timedelta(seconds=effective_offset(schedule.offset_seconds))
    grace = timedelta(seconds=reconcile_grace_seconds())
    deadline = timedelta(seconds=job.starting_deadline)
    lookback_start = now - timedelta(seconds=reconcile_lookback_seconds())
    start = max(
        schedule.reconciled_until or schedule.tracked_since, schedule.tracked_since, lookback_start
    )
    # Slots are boundary + offset; a boundary b is due at b + offset. Beat sends a slot at its
    # boundary, so only a boundary at or after the change (`tracked_since`) was sent under the
    # current cron and offset: a slot of the new settings whose boundary came before the change
    # was never sent (the message beat sent then carries the old slot and is recorded
    # `superseded`), so it is not expected either; the same for a schedule created or enabled
    # between a boundary and its offset.
    expected = [
        b + offset
        for b in cron.fire_times(
            max(start - offset, schedule.tracked_since),
            now - grace - offset + timedelta(microseconds=1),
        )
    ]
    expected = [slot for slot in expected if slot > start]
    if not expected:
        return
    present = set(
        JobRun.objects.filter(job=job.name, slot__in=expected)
        # a message turned away (refused, skipped, superseded) did not account for its slot
        .exclude(status__in=JobRun.NOT_ADMITTED)
        .values_list("slot", flat=True)
    )
    missing = [slot for slot in expected if slot not in present]
    final = now - deadline - grace
    newest = _newest_slot(job)
    for slot in missing:
        within_deadline = slot > now - deadline
        is_newest = slot == expected[-1] and (newest is None or newest < slot)
        if within_deadline and is_newest and job.catch_up == "once":
            reason = "re-sent: no run started within the grace period"
            if _resend(job, slot, schedule, now, attempt=1, reason=reason):
                counts["redispatched"] += 1
        elif slot <= final or not within_deadline or not is_newest:
            # Only the newest slot is ever re-sent, and a slot that is not the newest now never
            # will be: it is recorded now rather than at its deadline (hours, for a daily job).
            counts["missed"] += run_miss_slot(job=job.name, slot=slot, now=now)
    watermark = max((slot for slot in expected if slot <= final), default=None)
    if watermark is not None and (schedule.reconciled_until or start) < watermark:
        JobSchedule.objects.filter(pk=schedule.pk).update(reconciled_until=watermark)
