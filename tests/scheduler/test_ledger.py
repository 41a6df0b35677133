"""The ledger's transitions, one by one: what each writes and what it refuses. Real PostgreSQL.

The run path's end-to-end behaviour is in test_runs.py, test_reconcile.py and test_deliveries.py;
here each function is called directly, mostly on rows in a state it must not touch.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from scheduler.ledger import (
    HEARTBEAT_STOPPED,
    LOCK_HELD,
    RETRYABLE,
    run_claim_fresh,
    run_duplicate,
    run_expire,
    run_fail,
    run_is_stale,
    run_lose,
    run_lose_stale,
    run_miss_queued,
    run_miss_slot,
    run_retry,
    run_skip_lock,
    run_skip_queued,
    run_succeed,
    run_turn_away,
    run_unqueue,
)
from scheduler.locks import lease_acquire
from scheduler.models import JobLease, JobRun

Status = JobRun.Status
pytestmark = pytest.mark.django_db
SLOT = datetime(2026, 3, 4, 10, 0, 5, tzinfo=UTC)
TERMINAL = sorted(JobRun.TERMINAL)


def _row(status: str = Status.RUNNING, *, job: str = "ledger-job", **fields) -> JobRun:
    now = timezone.now()
    fields.setdefault("started_at", now)
    fields.setdefault("heartbeat_at", now)
    if status == Status.DUPLICATE:
        fields.setdefault("duplicate_of", _row(job=f"{job}-owner"))
    return JobRun.objects.create(job=job, slot=SLOT, status=status, **fields)


def _as_stored(run: JobRun) -> dict:
    return JobRun.objects.filter(pk=run.pk).values().get()


# --- a running run's end: only from running ------------------------------------------------------

ENDINGS = {
    "run_fail": lambda run, now: run_fail(run, now=now, error="boom", traceback="tb"),
    "run_retry": lambda run, now: run_retry(run, now=now, error="boom", traceback="tb"),
    "run_lose": lambda run, now: run_lose(run, now=now, error="lease lost"),
    "run_skip_lock": lambda run, now: run_skip_lock(run, now=now),
}
ENDS_IN = {
    "run_fail": Status.FAILED,
    "run_retry": Status.RETRYING,
    "run_lose": Status.LOST,
    "run_skip_lock": Status.SKIPPED_LOCK,
}


@pytest.mark.parametrize("ending", ENDINGS)
def test_a_running_run_ends_with_its_time_and_error(ending):
    run = _row(started_at=timezone.now() - timedelta(seconds=2))
    now = timezone.now()

    assert ENDINGS[ending](run, now) is True

    stored = _as_stored(run)
    assert stored["status"] == run.status == ENDS_IN[ending]
    assert stored["finished_at"] == now
    assert 1900 <= stored["duration_ms"] <= 3000
    assert stored["error"] == run.error != ""


@pytest.mark.parametrize("status", TERMINAL)
@pytest.mark.parametrize("ending", ENDINGS)
def test_no_ending_moves_a_run_out_of_a_terminal_status(ending, status):
    run = _row(status, error="as it was")
    before = _as_stored(run)
    stale_copy = JobRun.objects.get(pk=run.pk)
    stale_copy.status = Status.RUNNING  # what the caller believed

    assert ENDINGS[ending](stale_copy, timezone.now()) is False

    assert _as_stored(run) == before
    assert stale_copy.status == status  # reloaded: the caller sees what the ledger says


def test_ending_a_run_twice_changes_nothing_the_second_time():
    run = _row()
    assert run_fail(run, now=timezone.now(), error="first", traceback="") is True
    stored = _as_stored(run)

    assert run_retry(run, now=timezone.now(), error="second", traceback="") is False
    assert _as_stored(run) == stored


def test_a_lost_run_keeps_the_result_its_service_returned():
    run = _row()
    assert run_lose(run, now=timezone.now(), error="lost", result={"paid": 3}) is True
    assert _as_stored(run)["result"] == {"paid": 3}


def test_skipping_for_the_lock_says_why():
    run = _row()
    run_skip_lock(run, now=timezone.now())
    assert _as_stored(run)["error"] == LOCK_HELD


# --- success: fenced, with the lease's release ---------------------------------------------------


def test_success_frees_the_lease_and_a_second_success_changes_nothing():
    run = _row(job="ledger-succeed")
    lease = lease_acquire(job="ledger-succeed", run_id=run.pk, ttl=60)
    assert lease is not None

    assert run_succeed(run, lease, result={"n": 1}) is True
    stored = _as_stored(run)
    assert (stored["status"], stored["result"]) == (Status.SUCCEEDED, {"n": 1})
    assert JobLease.objects.get(job="ledger-succeed").holder_id is None

    assert run_succeed(JobRun.objects.get(pk=run.pk), lease, result={"n": 2}) is False
    assert _as_stored(run) == stored


@pytest.mark.parametrize("status", TERMINAL)
def test_success_is_refused_for_a_run_that_is_no_longer_running(status):
    """The lease is still held (by this token), yet the row was taken over: nothing changes,
    and the lease is not released by a success that did not happen."""
    run = _row(job=f"ledger-taken-{status}")
    lease = lease_acquire(job=run.job, run_id=run.pk, ttl=60)
    assert lease is not None
    JobRun.objects.filter(pk=run.pk).update(status=status)  # e.g. the reconciler marked it lost
    before = _as_stored(run)

    assert run_succeed(run, lease, result={}) is False

    assert _as_stored(run) == before
    assert JobLease.objects.get(job=run.job).holder_id == run.pk


def test_success_writes_its_extra_row_only_with_the_success():
    run = _row(job="ledger-also")
    lease = lease_acquire(job="ledger-also", run_id=run.pk, ttl=60)
    also = "UPDATE scheduler_jobrun SET reason = 'also ran' WHERE id IN (SELECT id FROM done)"
    JobRun.objects.filter(pk=run.pk).update(status=Status.LOST)

    assert run_succeed(run, lease, result={}, also=lambda _run: (also, {})) is False
    assert _as_stored(run)["reason"] == ""


# --- the claim ------------------------------------------------------------------------------------


def _claim(job: str, slot: datetime = SLOT):
    return run_claim_fresh(
        job=job,
        ttl=60,
        slot=slot,
        trigger=JobRun.Trigger.BEAT,
        user_id=None,
        reason="",
        task_id="t",
        worker="w",
        now=slot + timedelta(milliseconds=40),
    )


def test_a_fresh_claim_is_running_with_the_lease_and_the_next_one_is_skipped():
    first, lease = _claim("ledger-claim")
    second, no_lease = _claim("ledger-claim", SLOT + timedelta(minutes=1))

    assert (first.status, first.fence, first.lateness_ms) == (Status.RUNNING, lease.token, 40)
    assert _as_stored(first)["status"] == Status.RUNNING
    assert no_lease is None
    assert (second.status, second.error) == (Status.SKIPPED_LOCK, LOCK_HELD)
    assert _as_stored(second)["error"] == LOCK_HELD  # the statement's literal is the constant


def test_a_fresh_claim_of_a_slot_that_has_a_row_claims_nothing():
    _, lease = _claim("ledger-again")
    with transaction.atomic():  # inside a caller's transaction: a savepoint keeps it usable
        assert _claim("ledger-again") is None
        assert JobRun.objects.filter(job="ledger-again").count() == 1
    assert JobLease.objects.get(job="ledger-again").token == lease.token


# --- staleness -----------------------------------------------------------------------------------


def test_staleness_counts_from_the_heartbeat_then_the_start_then_the_creation():
    now = timezone.now()
    fresh = JobRun(heartbeat_at=now - timedelta(seconds=29), created_at=now - timedelta(hours=1))
    stale = JobRun(heartbeat_at=now - timedelta(seconds=31), created_at=now)
    never_beat = JobRun(started_at=now - timedelta(seconds=31), created_at=now)

    assert not run_is_stale(fresh, ttl=30, now=now)
    assert run_is_stale(stale, ttl=30, now=now)
    assert run_is_stale(never_beat, ttl=30, now=now)


def test_a_stale_run_is_lost_unless_its_heartbeat_moved_or_it_ended():
    old = timezone.now() - timedelta(minutes=5)
    lost, renewed, ended = (_row(heartbeat_at=old, job=f"ledger-stale-{n}") for n in range(3))
    JobRun.objects.filter(pk=renewed.pk).update(heartbeat_at=timezone.now())  # a renewal
    JobRun.objects.filter(pk=ended.pk).update(status=Status.SUCCEEDED)

    assert [run_lose_stale(run, now=timezone.now()) for run in (lost, renewed, ended)] == [
        True,
        False,
        False,
    ]
    assert (_as_stored(lost)["status"], _as_stored(lost)["error"]) == (
        Status.LOST,
        HEARTBEAT_STOPPED,
    )
    assert _as_stored(renewed)["status"] == Status.RUNNING
    assert _as_stored(ended)["status"] == Status.SUCCEEDED


# --- queued rows ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [Status.RUNNING, *TERMINAL])
def test_only_a_queued_run_is_missed_or_unqueued(status):
    queued, other = _row(Status.QUEUED, job="ledger-q"), _row(status, job="ledger-other")
    before = _as_stored(other)

    assert run_miss_queued(queued, now=timezone.now()) == 1
    assert run_miss_queued(other, now=timezone.now()) == 0
    run_unqueue(other)

    assert _as_stored(queued)["status"] == Status.MISSED
    assert _as_stored(other) == before


@pytest.mark.parametrize("status", [Status.RUNNING, *TERMINAL])
def test_only_a_queued_run_is_skipped_as_disabled(status):
    queued, other = _row(Status.QUEUED, job="ledger-sq"), _row(status, job="ledger-sq-other")
    before = _as_stored(other)

    assert run_skip_queued(queued, worker="w1", error="schedule 'x' is disabled", now=SLOT)
    assert not run_skip_queued(other, worker="w1", error="disabled", now=SLOT)
    assert not run_skip_queued(queued, worker="w2", error="again", now=SLOT)  # once only

    stored = _as_stored(queued)
    assert (stored["status"], stored["worker"]) == (Status.SKIPPED_DISABLED, "w1")
    assert stored["error"] == "skipped disabled: schedule 'x' is disabled"
    assert _as_stored(other) == before


def test_unqueueing_removes_a_queued_row():
    queued = _row(Status.QUEUED)
    run_unqueue(queued)
    assert not JobRun.objects.filter(pk=queued.pk).exists()


# --- rows born in their status -------------------------------------------------------------------


def test_a_missed_slot_leaves_a_row_the_slot_already_has():
    owner = _row(Status.SUCCEEDED, job="ledger-miss")

    run_miss_slot(job="ledger-miss", slot=SLOT, now=timezone.now())
    run_miss_slot(job="ledger-miss", slot=SLOT + timedelta(minutes=1), now=timezone.now())

    rows = dict(JobRun.objects.filter(job="ledger-miss").values_list("slot", "status"))
    assert rows == {SLOT: Status.SUCCEEDED, SLOT + timedelta(minutes=1): Status.MISSED}
    assert _as_stored(owner)["status"] == Status.SUCCEEDED


def test_an_expired_attempt_owns_it_and_a_second_owner_is_refused():
    run_expire(job="ledger-exp", slot=SLOT, trigger="beat", task_id="t", now=timezone.now())
    with pytest.raises(IntegrityError), transaction.atomic():
        run_expire(job="ledger-exp", slot=SLOT, trigger="beat", task_id="u", now=timezone.now())


def test_a_duplicate_points_at_its_owner_and_takes_its_attempt():
    owner = _row(job="ledger-dup", attempt=2)
    common = {"job": "ledger-dup", "slot": SLOT, "attempt": 1, "trigger": "api", "user_id": None}

    told = run_duplicate(owner=owner, reason="asked twice", why="slot is running", **common)
    quiet = run_duplicate(owner=owner, reason="", why="slot is running", **common)
    orphan = run_duplicate(owner=None, reason="", why="slot already taken", **common)

    assert (told.status, told.duplicate_of, told.attempt) == (Status.DUPLICATE, owner, 2)
    assert told.reason == "asked twice; slot is running"
    assert quiet.reason == "slot is running"
    assert (orphan.duplicate_of, orphan.attempt) == (None, 1)


@pytest.mark.parametrize("status", JobRun.NOT_ADMITTED)
def test_a_turned_away_delivery_claims_no_slot(status):
    owner = _row(job="ledger-away")
    away = run_turn_away(
        status=status,
        job="ledger-away",
        slot=SLOT,
        attempt=1,
        trigger="beat",
        task_id="t",
        worker="w",
        error="why",
        now=timezone.now(),
    )
    assert away.status == status  # beside the slot's owner: the unique constraint leaves it out
    assert _as_stored(owner)["status"] == Status.RUNNING


def test_turning_away_takes_only_a_turned_away_status():
    with pytest.raises(ValueError, match="not a turned-away status"):
        run_turn_away(
            status=Status.SUCCEEDED,
            job="ledger-away",
            slot=SLOT,
            attempt=1,
            trigger="beat",
            task_id="t",
            worker="w",
            error="",
            now=timezone.now(),
        )


# --- what ops retries ----------------------------------------------------------------------------


def test_retryable_statuses_are_defined_once_and_are_endings():
    """RETRYABLE lives here; the retry service, the admin and the API import this one."""
    from ops import admin as ops_admin
    from ops.api import views as api_views
    from scheduler.services import manual_runs

    assert manual_runs.RETRYABLE is ops_admin.RETRYABLE is api_views.RETRYABLE is RETRYABLE
    assert RETRYABLE <= JobRun.TERMINAL
