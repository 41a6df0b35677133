"""The run path: every trigger (beat, retry, admin, API, `runjob`) goes through `job_execute`.

1. Claim the slot: one ledger row per (job, slot, attempt), guarded by a unique constraint. A
   delivery that finds the slot running or done is stored as a duplicate and does not run.
2. Take the job's lease: a run that finds it held is `skipped_lock` and does nothing.
3. Call the job's service with the slot as `now`; record the outcome. Success is recorded only
   in a transaction that passes the lease's fencing check.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from scheduler.errors import soft_time_limit_reached
from scheduler.locks import (
    Lease,
    LeaseLost,
    lease_acquire,
    lease_held,
    succeed_and_release,
)
from scheduler.models import JobRun
from scheduler.registry import Job
from scheduler.sql import fetch_one

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


@dataclass(frozen=True)
class Outcome:
    run: JobRun
    retry_in: float | None = None  # seconds, when the wrapper asks the task to retry
    wait_in: float | None = None  # seconds, when the same message must look again later


def slot_of(moment: datetime) -> datetime:
    """A manual run's slot: the second it was asked for (two asks in one second are one run)."""
    return moment.astimezone(UTC).replace(microsecond=0)


def _stale(run: JobRun, job: Job, now: datetime) -> bool:
    seen = run.heartbeat_at or run.started_at or run.created_at
    return seen < now - timedelta(seconds=job.lock_ttl)


def _duplicate(delivery: Delivery, owner: JobRun, reason: str) -> JobRun:
    return JobRun.objects.create(
        job=delivery.job.name,
        slot=delivery.slot,
        attempt=owner.attempt,
        status=Status.DUPLICATE,
        trigger=delivery.trigger,
        duplicate_of=owner,
        user_id=delivery.user_id,
        reason=(delivery.reason + "; " if delivery.reason else "") + reason,
        task_id=delivery.task_id,
        worker=delivery.worker,
        finished_at=timezone.now(),
    )


def _start(run: JobRun, delivery: Delivery, now: datetime) -> JobRun:
    run.status = Status.RUNNING
    run.task_id = delivery.task_id or run.task_id
    run.worker = delivery.worker
    run.started_at = now
    run.heartbeat_at = now
    run.lateness_ms = int((now - delivery.slot).total_seconds() * 1000)
    if delivery.user_id and not run.user_id:
        run.user_id = delivery.user_id
    run.save()
    return run


def _new_attempt(delivery: Delivery, attempt: int, now: datetime, status: str) -> JobRun:
    run = JobRun(
        job=delivery.job.name,
        slot=delivery.slot,
        attempt=attempt,
        trigger=delivery.trigger,
        user_id=delivery.user_id,
        reason=delivery.reason,
        task_id=delivery.task_id,
    )
    if status == Status.RUNNING:
        return _start(run, delivery, now)
    run.status = status
    run.worker = delivery.worker
    run.finished_at = now
    run.save()
    return run


# The common case in one statement and one commit: nobody has touched this slot yet. The run's id
# is drawn first so that the lease can name its holder and the run its fence in the same statement
# (sibling CTEs cannot see each other's rows). No ON CONFLICT on the run: a slot that already has
# a row makes the whole statement fail with a unique violation, the lease change with it, and the
# caller takes the locked path. A held lease inserts the run as `skipped_lock` directly.
_CLAIM_FRESH = """
WITH new AS (
    SELECT nextval(pg_get_serial_sequence('scheduler_jobrun', 'id')) AS id,
        set_config(
            'synchronous_commit',
            COALESCE(%(synchronous_commit)s, current_setting('synchronous_commit')),
            true
        ) AS commit_mode
), lease AS (
    INSERT INTO scheduler_joblease (job, token, holder_id, expires_at)
    SELECT %(job)s, 1, new.id, statement_timestamp() + make_interval(secs => %(ttl)s) FROM new
    ON CONFLICT (job) DO UPDATE
        SET token = scheduler_joblease.token + 1,
            holder_id = EXCLUDED.holder_id,
            expires_at = EXCLUDED.expires_at
        WHERE scheduler_joblease.holder_id IS NULL
            OR scheduler_joblease.expires_at <= statement_timestamp()
    RETURNING token
)
INSERT INTO scheduler_jobrun (id, job, slot, attempt, status, trigger, user_id, reason, task_id,
    worker, fence, created_at, started_at, heartbeat_at, finished_at, duration_ms, lateness_ms,
    result, error, traceback)
SELECT new.id, %(job)s, %(slot)s, 1,
    CASE WHEN lease.token IS NULL THEN 'skipped_lock' ELSE 'running' END,
    %(trigger)s, %(user)s, %(reason)s, %(task)s, %(worker)s, lease.token,
    %(now)s, %(now)s, %(now)s,
    CASE WHEN lease.token IS NULL THEN %(now)s END,
    CASE WHEN lease.token IS NULL THEN 0 END,
    %(lateness)s, '{}',
    CASE WHEN lease.token IS NULL THEN 'another run holds the lock' ELSE '' END, ''
FROM new LEFT JOIN lease ON true
RETURNING id, fence
"""


def _commit_mode(nested: bool) -> str | None:
    """`off` for the claim's own commit; None (keep the session's) inside a caller's transaction.

    The claim may commit without waiting for its WAL flush because everything that depends on it
    being durable comes after it in the WAL: the job's money writes and the fenced success each
    commit synchronously, which flushes the WAL up to their own commit record and so the claim's
    too. What a server crash can lose is a claim whose run had written nothing durable yet, and
    the crash ends that run anyway (its connection dies): the slot then has no row, which the
    reconciler treats as a slot that never ran (missed or re-dispatched, by the job's policy) —
    the same outcome as a crash just before the claim. Inside a caller's transaction the caller's
    writes would share the commit, so the session's setting stays.
    """
    return None if nested else "off"


def _claim_fresh(delivery: Delivery, now: datetime) -> tuple[JobRun, Lease | None] | None:
    """Claim a slot nobody has touched and take the job's lease, in one statement.

    None when the slot already has a row (the caller then decides under a row lock). Outside a
    transaction the statement commits asynchronously (see `_commit_mode`).
    """
    job = delivery.job
    lateness = int((now - delivery.slot).total_seconds() * 1000)
    nested = connection.in_atomic_block
    params = {
        "synchronous_commit": _commit_mode(nested),
        "job": job.name,
        "ttl": job.lock_ttl,
        "slot": delivery.slot,
        "trigger": delivery.trigger,
        "user": delivery.user_id,
        "reason": delivery.reason,
        "task": delivery.task_id,
        "worker": delivery.worker,
        "now": now,
        "lateness": lateness,
    }
    try:
        # Inside a caller's transaction a failed statement must not poison it: a savepoint.
        with transaction.atomic() if nested else contextlib.nullcontext():
            row = fetch_one(_CLAIM_FRESH, params)
    except IntegrityError:
        return None
    assert row is not None  # INSERT ... SELECT FROM a one-row CTE returns its row
    run_id, token = row
    skipped = token is None
    run = JobRun(
        pk=run_id,
        job=job.name,
        slot=delivery.slot,
        attempt=1,
        status=Status.SKIPPED_LOCK if skipped else Status.RUNNING,
        trigger=delivery.trigger,
        user_id=delivery.user_id,
        reason=delivery.reason,
        task_id=delivery.task_id,
        worker=delivery.worker,
        fence=token,
        created_at=now,
        started_at=now,
        heartbeat_at=now,
        finished_at=now if skipped else None,
        duration_ms=0 if skipped else None,
        lateness_ms=lateness,
        error="another run holds the lock" if skipped else "",
    )
    lease = None if skipped else Lease(job=job.name, token=token, run_id=run_id, ttl=job.lock_ttl)
    return run, lease


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
        return Claim.RUN, _start(latest, delivery, now)
    if latest.status == Status.RUNNING:
        if _stale(latest, job, now):
            latest.status = Status.LOST
            latest.finished_at = now
            latest.error = "heartbeat stopped: the worker running it died or froze"
            latest.save(update_fields=["status", "finished_at", "error"])
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


def _finish(run: JobRun, status: str, now: datetime, **fields: object) -> bool:
    """Record a terminal state unless the row was taken over (e.g. marked lost) meanwhile."""
    started = run.started_at or now
    values = {
        "status": status,
        "finished_at": now,
        "duration_ms": max(0, int((now - started).total_seconds() * 1000)),
        **fields,
    }
    if JobRun.objects.filter(pk=run.pk, status=Status.RUNNING).update(**values) == 1:
        for name, value in values.items():
            setattr(run, name, value)
        return True
    run.refresh_from_db()
    return False


def _succeed(run: JobRun, lease: Lease, result: dict[str, Any], delivery: Delivery) -> bool:
    now = timezone.now()
    duration = max(0, int((now - (run.started_at or now)).total_seconds() * 1000))
    encoded = json.dumps(result, cls=DjangoJSONEncoder)
    run.status, run.finished_at, run.duration_ms, run.result = (
        Status.SUCCEEDED,
        now,
        duration,
        json.loads(encoded),
    )
    also = delivery.store_with_success(run) if delivery.store_with_success else None
    # On False the caller reloads the row, which undoes the values set above.
    return succeed_and_release(lease, now=now, duration_ms=duration, result=encoded, also=also)


def job_execute(delivery: Delivery, *, rng: random.Random | None = None) -> Outcome:
    """Run one delivery through claim, lease and service; return what happened."""
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
            _finish(run, Status.LOST, timezone.now(), error=str(exc))
            return Outcome(run=run)
        except Exception as exc:
            return _failed(run, job, delivery, exc, rng or random.Random())
        recorded = not heartbeat.lost.is_set() and _succeed(run, lease, result or {}, delivery)
        heartbeat.released = recorded
        if not recorded:
            run.refresh_from_db()
        if not recorded and run.status == Status.RUNNING:
            error = f"job {job.name!r} lost its lease (token {lease.token}) during the run"
            _finish(run, Status.LOST, timezone.now(), error=error, result=result or {})
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
    first = _claim_fresh(delivery, now) if fresh else None
    if first is not None:
        return Claim.RUN, *first
    # The slot has a row (a redelivery, a retry, a second beat, a queued manual run): decide
    # under its row lock. A failure rolls claim and lease back; the message is then delivered
    # or reconciled again.
    with transaction.atomic():
        claim, run = slot_claim(delivery, now=now)
        lease = None
        if claim is Claim.RUN:
            lease = lease_acquire(job=delivery.job.name, run_id=run.pk, ttl=delivery.job.lock_ttl)
            if lease is None:
                _finish(run, Status.SKIPPED_LOCK, now, error="another run holds the lock")
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
        _finish(run, Status.RETRYING, now, error=error, traceback=trace)
        logger.warning(
            "job %s attempt %s failed (%s); retry in %.0f s", job.name, run.attempt, error, delay
        )
        return Outcome(run=run, retry_in=delay)
    _finish(run, Status.FAILED, now, error=error, traceback=trace)
    logger.error("job %s slot %s failed: %s", job.name, delivery.slot.isoformat(), error)
    return Outcome(run=run)


def _drop_broken_connection() -> None:
    """The service's error may have killed the connection (e.g. its backend was terminated)."""
    alive = connection.connection is not None and not connection.in_atomic_block
    if alive and not connection.is_usable():
        connection.close()


def new_task_id() -> str:
    return str(uuid.uuid4())
