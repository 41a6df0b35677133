"""The ledger's state machine: every change of a JobRun's status is made here, and nowhere else.

One function per transition (statuses of JobRun.Status; "new" is a row inserted in it):

- new -> `queued`: `run_queue` (a dispatched run, before its message is sent); a queued row
  whose message was never sent is removed again: `run_unqueue`.
- new -> `running` or `skipped_lock`, with the job's lease: `run_claim_fresh` (the fast path,
  one prepared statement); `queued` or a new attempt -> `running`: `run_start` (the locked path).
- `running` -> `succeeded`, with the lease's release and the Celery result row: `run_succeed`.
- `running` -> `failed` / `retrying` / `lost` / `skipped_lock`: `run_fail`, `run_retry`,
  `run_lose`, `run_skip_lock`; a stale heartbeat: `run_lose_stale` (test: `run_is_stale`).
- `queued`, never started -> `missed`: `run_miss_queued`; new -> `missed`: `run_miss_slot`.
- new -> `expired`: `run_expire`; new -> `duplicate`: `run_duplicate`.
- new -> `refused` / `skipped_disabled` / `superseded` (JobRun.NOT_ADMITTED): `run_turn_away`.

The rules they keep, as the run path and the reconciler kept them before they moved here:
- A status in JobRun.TERMINAL is final: nothing moves a row out of one. Every update names the
  status it leaves in its WHERE clause (running or queued), so a transition that lost a race
  (the row was marked lost, or ended, meanwhile) changes nothing and says so; `run_start` saves
  under the slot's row lock, taken by its caller.
- Success is recorded only while the run's lease is held (fencing), in one statement with the
  lease's release and, when given, the task's Celery result row (scheduler.results).
- A retry, a lost run's next attempt and an operator's retry are new rows (the next attempt);
  which statuses an operator may retry is `RETRYABLE`.
- Rows of a slot are guarded by the unique constraint `jobrun_one_claim_per_slot_attempt`:
  inserting a second owner of (job, slot, attempt) raises IntegrityError (the callers catch it).

The lease's own SQL lives in scheduler.locks; the two run-path statements here embed its pieces,
so claim + lease and success + release + result are one statement each, as before they moved.
tests/test_layout.py fails when a JobRun status write appears anywhere else in production code.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from scheduler.locks import LEASE_HELD, LEASE_RELEASE, LEASE_TAKE, Lease
from scheduler.models import JobRun
from scheduler.own_schedule import STILL_AS_SEEN, UNGUARDED, GuardFailed, OwnSchedule
from scheduler.sql import fetch_one

Status = JobRun.Status

# The statuses an operator may retry (admin, API): a later attempt of the slot is sent. The
# others either ran (succeeded), will run again on their own (retrying), never owned a slot
# (duplicate, refused, ...) or are still under way (queued, running).
RETRYABLE = frozenset({Status.FAILED, Status.LOST, Status.MISSED, Status.EXPIRED})

LOCK_HELD = "another run holds the lock"  # also written, as a literal, by _CLAIM_FRESH
HEARTBEAT_STOPPED = "heartbeat stopped: the worker running it died or froze"
NEVER_STARTED = "queued but never started: the message was lost or expired"
NO_RUN = "no run started for this slot"


def run_is_stale(run: JobRun, *, ttl: int, now: datetime) -> bool:
    """Whether a running row's worker is presumed dead: no heartbeat (nor start) for `ttl` s."""
    seen = run.heartbeat_at or run.started_at or run.created_at
    return seen < now - timedelta(seconds=ttl)


# --- births: rows inserted in their first status -------------------------------------------------


def run_queue(
    *,
    job: str,
    slot: datetime,
    attempt: int,
    trigger: str,
    user_id: int | None,
    reason: str,
    task_id: str,
) -> JobRun:
    """A run whose message is about to be sent (`queued`). IntegrityError when the slot's
    attempt already has its row (the caller records a duplicate instead)."""
    return JobRun.objects.create(
        job=job,
        slot=slot,
        attempt=attempt,
        status=Status.QUEUED,
        trigger=trigger,
        user_id=user_id,
        reason=reason,
        task_id=task_id,
    )


def run_unqueue(run: JobRun) -> None:
    """Remove a `queued` row whose message was never sent (the broker refused it), so that the
    slot counts as not run; a row that started meanwhile stays."""
    JobRun.objects.filter(pk=run.pk, status=Status.QUEUED).delete()


def run_duplicate(
    *,
    owner: JobRun | None,
    job: str,
    slot: datetime,
    attempt: int,
    trigger: str,
    user_id: int | None,
    reason: str,
    why: str,
    task_id: str = "",
    worker: str = "",
    now: datetime | None = None,
) -> JobRun:
    """A delivery (or dispatch) of a slot another row owns: recorded, pointing at that owner,
    and never run. Its attempt is the owner's (`attempt` when there is no owner to name)."""
    return JobRun.objects.create(
        job=job,
        slot=slot,
        attempt=owner.attempt if owner else attempt,
        status=Status.DUPLICATE,
        trigger=trigger,
        duplicate_of=owner,
        user_id=user_id,
        reason=(reason + "; " if reason else "") + why,
        task_id=task_id,
        worker=worker,
        finished_at=now or timezone.now(),
    )


def run_expire(
    *,
    job: str,
    slot: datetime,
    trigger: str,
    task_id: str,
    now: datetime,
    attempt: int = 1,
    worker: str = "",
    user_id: int | None = None,
    reason: str = "",
    error: str = "",
) -> JobRun:
    """A slot (attempt) whose message came, or expired, past the job's starting deadline: it owns
    the attempt and never ran. IntegrityError when the attempt already has its row."""
    return JobRun.objects.create(
        job=job,
        slot=slot,
        attempt=attempt,
        status=Status.EXPIRED,
        trigger=trigger,
        user_id=user_id,
        reason=reason,
        task_id=task_id,
        worker=worker,
        finished_at=now,
        error=error,
    )


def run_miss_slot(*, job: str, slot: datetime, now: datetime) -> int:
    """A beat slot no run started for: recorded `missed` unless the slot has its row by now
    (the insert is skipped on conflict). Returns bulk_create's count, 1 either way."""
    created = JobRun.objects.bulk_create(
        [
            JobRun(
                job=job,
                slot=slot,
                status=Status.MISSED,
                trigger=JobRun.Trigger.BEAT,
                finished_at=now,
                error=NO_RUN,
            )
        ],
        ignore_conflicts=True,
    )
    return len(created)


def run_turn_away(
    *,
    status: str,
    job: str,
    slot: datetime,
    attempt: int,
    trigger: str,
    task_id: str,
    worker: str,
    error: str,
    now: datetime,
) -> JobRun:
    """A delivery the worker did not admit: `refused` (not a due slot), `skipped_disabled` or
    `superseded` (overtaken by a schedule change) — JobRun.NOT_ADMITTED. It claims no slot
    (the unique constraint leaves these statuses out) and runs nothing."""
    if status not in JobRun.NOT_ADMITTED:
        raise ValueError(f"{status!r} is not a turned-away status ({JobRun.NOT_ADMITTED})")
    return JobRun.objects.create(
        job=job,
        slot=slot,
        attempt=attempt,
        status=status,
        trigger=trigger,
        task_id=task_id,
        worker=worker,
        finished_at=now,
        error=error,
    )


# --- the claim -----------------------------------------------------------------------------------

# The common case in one statement and one commit: nobody has touched this slot yet. The run's id
# is drawn first so that the lease can name its holder and the run its fence in the same statement
# (sibling CTEs cannot see each other's rows). No ON CONFLICT on the run: a slot that already has
# a row makes the whole statement fail with a unique violation, the lease change with it, and the
# caller takes the locked path. A held lease inserts the run as `skipped_lock` directly.
# Composed of constants only (scheduler.locks' lease pieces): no outside input.
_CLAIM_FRESH = f"""
WITH new AS (
    SELECT nextval(pg_get_serial_sequence('scheduler_jobrun', 'id')) AS id,
        set_config(
            'synchronous_commit',
            COALESCE(%(synchronous_commit)s, current_setting('synchronous_commit')),
            true
        ) AS commit_mode
    WHERE {STILL_AS_SEEN}
), lease AS (
    {LEASE_TAKE.format(holder="new.id", source=" FROM new")}
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
    %(lateness)s, '{{}}',
    CASE WHEN lease.token IS NULL THEN 'another run holds the lock' ELSE '' END, ''
FROM new LEFT JOIN lease ON true
RETURNING id, fence
"""  # noqa: S608 (constants only)


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


def run_claim_fresh(
    *,
    job: str,
    ttl: int,
    slot: datetime,
    trigger: str,
    user_id: int | None,
    reason: str,
    task_id: str,
    worker: str,
    now: datetime,
    guard: OwnSchedule | None = None,
) -> tuple[JobRun, Lease | None] | None:
    """Claim attempt 1 of a slot nobody has touched and take the job's lease, in one (prepared)
    statement: the row is `running` with the lease, or `skipped_lock` when another run holds it.

    None when the slot already has a row (the caller then decides under a row lock). Outside a
    transaction the statement commits asynchronously (see `_commit_mode`). With a `guard` the
    statement inserts nothing, and GuardFailed is raised, unless the job's own schedule still
    reads as the guard says (scheduler.own_schedule).
    """
    lateness = int((now - slot).total_seconds() * 1000)
    nested = connection.in_atomic_block
    params = {
        "synchronous_commit": _commit_mode(nested),
        "job": job,
        "ttl": ttl,
        "slot": slot,
        "trigger": trigger,
        "user": user_id,
        "reason": reason,
        "task": task_id,
        "worker": worker,
        "now": now,
        "lateness": lateness,
        **(UNGUARDED if guard is None else guard.guard()),
    }
    try:
        # Inside a caller's transaction a failed statement must not poison it: a savepoint.
        with transaction.atomic() if nested else contextlib.nullcontext():
            row = fetch_one(_CLAIM_FRESH, params)
    except IntegrityError:
        return None
    if row is None:  # the guard's row reads otherwise now: nothing was inserted
        assert guard is not None  # unguarded, INSERT ... SELECT FROM a one-row CTE returns it
        raise GuardFailed(f"schedule {guard.job!r} changed since this worker read it")
    run_id, token = row
    skipped = token is None
    run = JobRun(
        pk=run_id,
        job=job,
        slot=slot,
        attempt=1,
        status=Status.SKIPPED_LOCK if skipped else Status.RUNNING,
        trigger=trigger,
        user_id=user_id,
        reason=reason,
        task_id=task_id,
        worker=worker,
        fence=token,
        created_at=now,
        started_at=now,
        heartbeat_at=now,
        finished_at=now if skipped else None,
        duration_ms=0 if skipped else None,
        lateness_ms=lateness,
        error=LOCK_HELD if skipped else "",
    )
    lease = None if skipped else Lease(job=job, token=token, run_id=run_id, ttl=ttl)
    return run, lease


def run_start(
    run: JobRun,
    *,
    task_id: str,
    worker: str,
    user_id: int | None,
    slot: datetime,
    now: datetime,
) -> JobRun:
    """`queued` (or a new attempt, not saved yet) -> `running`, saved. The caller holds the
    slot's row lock (scheduler.services.runs.slot_claim) and takes the lease next."""
    run.status = Status.RUNNING
    run.task_id = task_id or run.task_id
    run.worker = worker
    run.started_at = now
    run.heartbeat_at = now
    run.lateness_ms = int((now - slot).total_seconds() * 1000)
    if user_id and not run.user_id:
        run.user_id = user_id
    run.save()
    return run


# --- the end of a running run --------------------------------------------------------------------

_SUCCEED_AND_RELEASE = f"""
WITH held AS (
    {LEASE_HELD}
    FOR UPDATE
), done AS (
    UPDATE scheduler_jobrun
    SET status = 'succeeded', finished_at = %(now)s, duration_ms = %(ms)s, result = %(result)s
    WHERE id = %(run)s AND status = 'running' AND EXISTS (SELECT 1 FROM held)
    RETURNING id
), released AS (
    {LEASE_RELEASE} AND EXISTS (SELECT 1 FROM done)
    RETURNING 1
){{also}}
SELECT 1 FROM released
"""  # noqa: S608 (constants only)


def run_succeed(
    run: JobRun,
    lease: Lease,
    *,
    result: dict[str, Any],
    also: Callable[[JobRun], tuple[str, dict[str, Any]] | None] | None = None,
    now: datetime | None = None,
) -> bool:
    """`running` -> `succeeded` and the lease freed, in one (prepared, durable) statement, only
    while the lease is still held (fencing). False when it was lost or the row was taken over;
    `run` then holds the values it would have had: the caller reloads it.

    `also`: given the run as it will be recorded, SQL and parameters of one more write that
    happens only with the success, or None; the SQL may read the CTE `done` (the succeeded run's
    id). The run path passes the task's Celery result row (scheduler.results).
    """
    now = now or timezone.now()
    duration = max(0, int((now - (run.started_at or now)).total_seconds() * 1000))
    encoded = json.dumps(result, cls=DjangoJSONEncoder)
    run.status, run.finished_at, run.duration_ms, run.result = (
        Status.SUCCEEDED,
        now,
        duration,
        json.loads(encoded),
    )
    params: dict[str, object] = {
        "job": lease.job,
        "token": lease.token,
        "run": lease.run_id,
        "now": now,
        "ms": duration,
        "result": encoded,
    }
    sql = _SUCCEED_AND_RELEASE.format(also="")
    extra = also(run) if also is not None else None
    if extra is not None:
        extra_sql, extra_params = extra
        sql = _SUCCEED_AND_RELEASE.format(also=f", also AS ({extra_sql})")
        params.update(extra_params)
    return fetch_one(sql, params) is not None


def _finish(run: JobRun, status: str, now: datetime, **fields: object) -> bool:
    """`running` -> `status`, unless the row was taken over (e.g. marked lost) meanwhile: then
    False, and `run` is reloaded to what the ledger says."""
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


def run_fail(run: JobRun, *, now: datetime, error: str, traceback: str) -> bool:
    """`running` -> `failed` (an error the job does not retry, or retries spent)."""
    return _finish(run, Status.FAILED, now, error=error, traceback=traceback)


def run_retry(run: JobRun, *, now: datetime, error: str, traceback: str) -> bool:
    """`running` -> `retrying`: this attempt failed transiently; the next attempt is a new row."""
    return _finish(run, Status.RETRYING, now, error=error, traceback=traceback)


def run_lose(
    run: JobRun, *, now: datetime, error: str, result: dict[str, Any] | None = None
) -> bool:
    """`running` -> `lost`: the run found it no longer held its lease (its work, if any, is not
    recorded as a success; `result` keeps what the service returned)."""
    if result is None:
        return _finish(run, Status.LOST, now, error=error)
    return _finish(run, Status.LOST, now, error=error, result=result)


def run_skip_lock(run: JobRun, *, now: datetime) -> bool:
    """`running` -> `skipped_lock`: the locked path claimed the slot but another run holds the
    job's lease (in the same transaction, so the row never shows `running` to anyone)."""
    return _finish(run, Status.SKIPPED_LOCK, now, error=LOCK_HELD)


def run_lose_stale(run: JobRun, *, now: datetime) -> bool:
    """`running` -> `lost` for a run whose heartbeat went stale (`run_is_stale`): its worker
    died or froze. Only while the row is still running with the heartbeat read (a renewal in
    between proves it alive); False otherwise."""
    updated = JobRun.objects.filter(
        pk=run.pk, status=Status.RUNNING, heartbeat_at=run.heartbeat_at
    ).update(status=Status.LOST, finished_at=now, error=HEARTBEAT_STOPPED)
    if updated:
        run.status, run.finished_at, run.error = Status.LOST, now, HEARTBEAT_STOPPED
    return bool(updated)


def run_skip_queued(run: JobRun, *, worker: str, error: str, now: datetime) -> bool:
    """`queued` -> `skipped_disabled`: a re-send's own queued row, delivered after its schedule
    was disabled (scheduler.services.deliveries). Only while still queued, so a second delivery
    of the message skips it once; False otherwise."""
    error = f"skipped disabled: {error}"[:4000]
    updated = JobRun.objects.filter(pk=run.pk, status=Status.QUEUED).update(
        status=Status.SKIPPED_DISABLED, worker=worker[:255], finished_at=now, error=error
    )
    if updated:
        run.status, run.worker, run.finished_at, run.error = (
            Status.SKIPPED_DISABLED,
            worker[:255],
            now,
            error,
        )
    return bool(updated)


def run_miss_queued(run: JobRun, *, now: datetime) -> int:
    """`queued` -> `missed`: its message never started it before its deadline. 1 if it was
    still queued, 0 otherwise."""
    return JobRun.objects.filter(pk=run.pk, status=Status.QUEUED).update(
        status=Status.MISSED, finished_at=now, error=NEVER_STARTED
    )
