"""The run path: every trigger (beat, retry, admin, API, `runjob`) goes through `job_execute`.

1. Claim the slot: one ledger row per (job, slot, attempt), guarded by a unique constraint. A
   delivery that finds the slot running or done is stored as a duplicate and does not run.
2. Take the job's lease: a run that finds it held is `skipped_lock` and does nothing.
3. Call the job's service with the slot as `now`; record the outcome. Success is recorded only
   in a transaction that passes the lease's fencing check.

This module decides; every status it records is written by a transition of scheduler.ledger.
"""

from __future__ import annotations

import logging
import random
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from scheduler.errors import soft_time_limit_reached
from scheduler.ledger import (
    run_claim_fresh,
    run_duplicate,
    run_expire,
    run_fail,
    run_is_stale,
    run_lose,
    run_lose_stale,
    run_retry,
    run_skip_lock,
    run_start,
    run_succeed,
)
from scheduler.locks import Lease, LeaseLost, lease_acquire, lease_held
from scheduler.models import JobRun
from scheduler.own_schedule import GuardFailed, OwnSchedule
from scheduler.registry import Job

logger = logging.getLogger(__name__)
Status = JobRun.Status


class Claim(Enum):
    RUN = "run"  # this delivery owns the slot's next attempt
    DUPLICATE = "duplicate"  # the slot is running or done elsewhere
    WAIT = "wait"  # the same message is being run (or its worker died): look again later
    EXPIRED = "expired"  # past the job's starting deadline


@dataclass(frozen=True)
class Delivery:
    """What one message (or inline call) asks for."""

    job: Job
    slot: datetime
    trigger: str
    task_id: str
    attempt: int = 1  # the attempt a retry message was sent for
    run_id: int | None = None  # a row created up front (manual runs, re-dispatch)
    worker: str = ""
    user_id: int | None = None
    reason: str = ""
    # SQL and parameters written in the success's own statement (and commit), given the run as
    # it will be recorded: the task's Celery result (scheduler.results), or None to write nothing.
    store_with_success: Callable[[JobRun], tuple[str, dict[str, Any]] | None] | None = None
    # The job's own schedule as the worker last read it, which admitted this message unasked:
    # the claim re-checks it (scheduler.own_schedule); None when the message was admitted on
    # what is stored now (or needs no admission: an inline run).
    guard: OwnSchedule | None = None


@dataclass(frozen=True)
class Outcome:
    run: JobRun
    retry_in: float | None = None  # seconds, when the wrapper asks the task to retry
    wait_in: float | None = None  # seconds, when the same message must look again later


def slot_of(moment: datetime) -> datetime:
    """A manual run's slot: the second it was asked for (two asks in one second are one run)."""
    return moment.astimezone(UTC).replace(microsecond=0)


def _duplicate(delivery: Delivery, owner: JobRun, why: str) -> JobRun:
    return run_duplicate(
        owner=owner,
        job=delivery.job.name,
        slot=delivery.slot,
        attempt=owner.attempt,
        trigger=delivery.trigger,
        user_id=delivery.user_id,
        reason=delivery.reason,
        why=why,
        task_id=delivery.task_id,
        worker=delivery.worker,
    )


def _start(run: JobRun, delivery: Delivery, now: datetime) -> JobRun:
    return run_start(
        run,
        task_id=delivery.task_id,
        worker=delivery.worker,
        user_id=delivery.user_id,
        slot=delivery.slot,
        now=now,
    )


def _new_attempt(delivery: Delivery, attempt: int, now: datetime, status: str) -> JobRun:
    if status == Status.EXPIRED:
        return run_expire(
            job=delivery.job.name,
            slot=delivery.slot,
            attempt=attempt,
            trigger=delivery.trigger,
            user_id=delivery.user_id,
            reason=delivery.reason,
            task_id=delivery.task_id,
            worker=delivery.worker,
            now=now,
        )
    run = JobRun(
        job=delivery.job.name,
        slot=delivery.slot,
        attempt=attempt,
        trigger=delivery.trigger,
        user_id=delivery.user_id,
        reason=delivery.reason,
        task_id=delivery.task_id,
    )
    return _start(run, delivery, now)


def slot_claim(delivery: Delivery, *, now: datetime | None = None) -> tuple[Claim, JobRun]:
    """Decide, under a row lock, whether this delivery runs the slot; record what it decided."""
    now = now or timezone.now()
    for _ in range(3):
        try:
            with transaction.atomic():
                return _claim_locked(delivery, now)
        except IntegrityError:
            # Another delivery inserted the same (job, slot, attempt) first: look again.
            continue
    raise RuntimeError(f"could not claim {delivery.job.name} {delivery.slot}")  # pragma: no cover


def _deadline_passed(delivery: Delivery, now: datetime) -> bool:
    deadline = delivery.slot + timedelta(seconds=delivery.job.starting_deadline)
    return delivery.trigger == JobRun.Trigger.BEAT and now > deadline


def _claim_locked(delivery: Delivery, now: datetime) -> tuple[Claim, JobRun]:
    job = delivery.job
    latest = (
        JobRun.objects.select_for_update()
        .filter(JobRun.SLOT_OWNERS, job=job.name, slot=delivery.slot)
        .order_by("-attempt")
        .first()
    )
    deadline_passed = _deadline_passed(delivery, now)
    if latest is None:
        if deadline_passed:
            return Claim.EXPIRED, _new_attempt(delivery, 1, now, Status.EXPIRED)
        return Claim.RUN, _new_attempt(delivery, 1, now, Status.RUNNING)
    if latest.status == Status.QUEUED:
        # A queued row belongs to the message job_dispatch sent for it (its task id). Another
        # delivery of the slot, e.g. the original beat message redelivered after its worker died
        # while the reconciler's re-send waits for its own second, is a duplicate: taking the row
        # over would leave the re-send, arriving later, naming a row that no longer carries its
        # task id, and it would be recorded `refused` like a forgery.
        if not latest.task_id or latest.task_id == delivery.task_id:
            return Claim.RUN, _start(latest, delivery, now)
        why = f"slot already queued for run {latest.pk} (task {latest.task_id})"
        return Claim.DUPLICATE, _duplicate(delivery, latest, why)
    if latest.status == Status.RUNNING:
        # Under the row lock the heartbeat cannot move: a stale row is always marked lost here.
        if run_is_stale(latest, ttl=job.lock_ttl, now=now) and run_lose_stale(latest, now=now):
            return Claim.RUN, _new_attempt(delivery, latest.attempt + 1, now, Status.RUNNING)
        if delivery.task_id and latest.task_id == delivery.task_id:
            return Claim.WAIT, latest
        return Claim.DUPLICATE, _duplicate(delivery, latest, f"slot is running ({latest.worker})")
    if latest.status == Status.LOST or (
        latest.status == Status.RETRYING and delivery.attempt == latest.attempt + 1
    ):
        if deadline_passed and latest.status == Status.LOST:
            return Claim.EXPIRED, _new_attempt(delivery, latest.attempt + 1, now, Status.EXPIRED)
        return Claim.RUN, _new_attempt(delivery, latest.attempt + 1, now, Status.RUNNING)
    return Claim.DUPLICATE, _duplicate(delivery, latest, f"slot already {latest.status}")


def job_execute(delivery: Delivery, *, rng: random.Random | None = None) -> Outcome:
    """Run one delivery through claim, lease and service; return what happened. GuardFailed:
    `delivery.guard` no longer holds, nothing was written (the caller admits it first)."""
    job = delivery.job
    claim, run, lease = _claim_and_lease(delivery, timezone.now())
    if claim is Claim.WAIT:
        return Outcome(run=run, wait_in=float(job.lock_ttl))
    if claim is not Claim.RUN:
        logger.info("job %s slot %s: %s", job.name, delivery.slot.isoformat(), run.status)
        return Outcome(run=run)
    if lease is None:
        logger.info("job %s slot %s: skipped, lock held", job.name, delivery.slot.isoformat())
        return Outcome(run=run)

    with lease_held(lease) as heartbeat:
        try:
            # Money services never act on a moment that has not come yet: a slot a little ahead
            # of this clock (scheduler.services.deliveries.FUTURE_TOLERANCE) runs as of now.
            result = job.run_service(now=min(delivery.slot, timezone.now()))
        except LeaseLost as exc:
            run_lose(run, now=timezone.now(), error=str(exc))
            return Outcome(run=run)
        except Exception as exc:
            return _failed(run, job, delivery, exc, rng or random.Random())
        recorded = not heartbeat.lost.is_set() and run_succeed(
            run, lease, result=result or {}, also=delivery.store_with_success
        )
        heartbeat.released = recorded
        if not recorded:
            run.refresh_from_db()
        if not recorded and run.status == Status.RUNNING:
            error = f"job {job.name!r} lost its lease (token {lease.token}) during the run"
            run_lose(run, now=timezone.now(), error=error, result=result or {})
    logger.info(
        "job %s slot %s: %s in %s ms %s",
        job.name,
        delivery.slot.isoformat(),
        run.status,
        run.duration_ms,
        run.result,
    )
    return Outcome(run=run)


def _claim_and_lease(delivery: Delivery, now: datetime) -> tuple[Claim, JobRun, Lease | None]:
    """Claim the slot and take the lease in one commit; no moment where the slot is `running`
    without a lease or a skipped run shows as `running`."""
    fresh = (
        delivery.attempt == 1 and delivery.run_id is None and not _deadline_passed(delivery, now)
    )
    if delivery.guard is not None and not fresh:
        raise GuardFailed("only a fresh claim checks the guard: admit the message first")
    first = (
        run_claim_fresh(
            job=delivery.job.name,
            ttl=delivery.job.lock_ttl,
            slot=delivery.slot,
            trigger=delivery.trigger,
            user_id=delivery.user_id,
            reason=delivery.reason,
            task_id=delivery.task_id,
            worker=delivery.worker,
            now=now,
            guard=delivery.guard,
        )
        if fresh
        else None
    )
    if first is not None:
        return Claim.RUN, *first
    if delivery.guard is not None:  # the slot has a row: what to do with it needs admission
        raise GuardFailed("the slot has a row already: admit the message first")
    # The slot has a row (a redelivery, a retry, a second beat, a queued manual run): decide
    # under its row lock. A failure rolls claim and lease back; the message is then delivered
    # or reconciled again.
    with transaction.atomic():
        claim, run = slot_claim(delivery, now=now)
        lease = None
        if claim is Claim.RUN:
            lease = lease_acquire(job=delivery.job.name, run_id=run.pk, ttl=delivery.job.lock_ttl)
            if lease is None:
                run_skip_lock(run, now=now)
            else:
                run.fence = lease.token
    return claim, run, lease


def _failed(
    run: JobRun, job: Job, delivery: Delivery, exc: Exception, rng: random.Random
) -> Outcome:
    _drop_broken_connection()
    now = timezone.now()
    error = f"{type(exc).__name__}: {exc}"
    # Out of time is not a transient error: a retry would meet the same backlog and limit.
    # Whatever the soft limit broke on its way out (the connection, mid-query) is named after it.
    out_of_time = soft_time_limit_reached(exc)
    if out_of_time:
        error = f"soft time limit ({job.soft_time_limit} s) reached before the run ended: {error}"
    error = error[:4000]
    trace = traceback.format_exc()[-20000:]
    retryable = not out_of_time and bool(job.retry.retry_on) and isinstance(exc, job.retry.retry_on)
    if retryable and run.attempt <= job.retry.max_retries:
        delay = job.retry.delay(run.attempt - 1, rng.random)
        run_retry(run, now=now, error=error, traceback=trace)
        logger.warning(
            "job %s attempt %s failed (%s); retry in %.0f s", job.name, run.attempt, error, delay
        )
        return Outcome(run=run, retry_in=delay)
    run_fail(run, now=now, error=error, traceback=trace)
    logger.error("job %s slot %s failed: %s", job.name, delivery.slot.isoformat(), error)
    return Outcome(run=run)


def _drop_broken_connection() -> None:
    """The service's error may have killed the connection (e.g. its backend was terminated)."""
    alive = connection.connection is not None and not connection.in_atomic_block
    if alive and not connection.is_usable():
        connection.close()


def new_task_id() -> str:
    return str(uuid.uuid4())
