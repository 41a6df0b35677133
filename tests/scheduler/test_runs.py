"""The run path: slot claim, lease, outcome. Real PostgreSQL; the service is a test job."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from scheduler.locks import fence_check, lease_acquire, lease_held
from scheduler.models import JobRun
from scheduler.services.runs import Claim, Delivery, job_execute, slot_claim

Status = JobRun.Status
pytestmark = pytest.mark.django_db


def _delivery(job, *, task_id="t1", slot=None, **extra):
    slot = slot or timezone.now().replace(second=0, microsecond=0)
    return Delivery(
        job=job,
        slot=slot,
        trigger=extra.pop("trigger", "beat"),
        task_id=task_id,
        worker="w1",
        **extra,
    )


def test_a_slot_runs_once_and_a_second_delivery_is_recorded_as_duplicate(register_job):
    job = register_job("slot-job")
    first = job_execute(_delivery(job, task_id="a")).run
    second = job_execute(_delivery(job, task_id="b", slot=first.slot)).run

    assert first.status == Status.SUCCEEDED
    assert first.result == {"calls": 1}
    assert first.lateness_ms is not None
    assert first.duration_ms is not None
    assert second.status == Status.DUPLICATE
    assert second.duplicate_of_id == first.pk
    assert "already succeeded" in second.reason


def test_redelivery_of_a_running_message_waits_instead_of_running_twice(register_job):
    job = register_job("wait-job")
    delivery = _delivery(job, task_id="same")
    claim, run = slot_claim(delivery)
    assert claim is Claim.RUN

    again, same_run = slot_claim(delivery)

    assert again is Claim.WAIT
    assert same_run.pk == run.pk
    assert JobRun.objects.filter(job="wait-job").count() == 1


def test_a_running_attempt_with_a_stale_heartbeat_is_lost_and_the_slot_runs_again(register_job):
    job = register_job("lost-job", lock_ttl=30)
    delivery = _delivery(job, task_id="m1")
    _, first = slot_claim(delivery)
    JobRun.objects.filter(pk=first.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))

    outcome = job_execute(delivery)

    first.refresh_from_db()
    assert first.status == Status.LOST
    assert outcome.run.attempt == 2
    assert outcome.run.status == Status.SUCCEEDED


def test_the_original_message_redelivered_before_the_reconcilers_resend_leaves_it_its_row(
    register_job,
):
    """A worker died mid-run; the reconciler recorded the attempt lost and queued a re-send (which
    may wait for its job's own second); the broker then redelivers the original message first."""
    from django_celery_beat.models import PeriodicTask

    from scheduler.cron import Cron
    from scheduler.services.deliveries import delivery_admit
    from scheduler.services.dispatch import job_dispatch
    from scheduler.services.writes import crontab_for

    job = register_job("resent-job", lock_ttl=30)
    PeriodicTask.objects.create(  # enabled: a re-send of a disabled schedule is skipped
        name=job.name, task=job.task, crontab=crontab_for(Cron.parse("* * * * *"))
    )
    original = _delivery(job, task_id="original")
    _, first = slot_claim(original)
    JobRun.objects.filter(pk=first.pk).update(status=Status.LOST, finished_at=timezone.now())
    resend = job_dispatch(job=job, slot=first.slot, trigger="reconciler", attempt=2)

    redelivered = job_execute(original).run

    # then the original is a duplicate of the queued re-send, which keeps its task id
    assert redelivered.status == Status.DUPLICATE
    assert redelivered.duplicate_of_id == resend.pk
    assert "already queued" in redelivered.reason
    resend.refresh_from_db()
    assert (resend.status, resend.task_id) == (Status.QUEUED, resend.task_id)
    # and the re-send, arriving later, is admitted and runs the slot once
    message = _delivery(
        job,
        task_id=resend.task_id,
        slot=first.slot,
        trigger="reconciler",
        attempt=2,
        run_id=resend.pk,
    )
    assert delivery_admit(message) is None
    assert job_execute(message).run.status == Status.SUCCEEDED
    assert not JobRun.objects.filter(job=job.name, status=Status.REFUSED).exists()
    assert JobRun.objects.filter(job=job.name, status=Status.SUCCEEDED).count() == 1


def test_a_run_that_finds_the_lock_held_is_skipped_and_does_nothing(register_job):
    job = register_job("locked-job")
    holder = JobRun.objects.create(
        job="locked-job", slot=datetime(2026, 1, 1, tzinfo=UTC), status=Status.RUNNING
    )
    assert lease_acquire(job="locked-job", run_id=holder.pk, ttl=60) is not None

    run = job_execute(_delivery(job)).run

    assert run.status == Status.SKIPPED_LOCK
    from tests.scheduler.sample_jobs import CALLS

    assert CALLS == []


def test_an_expired_lease_can_be_taken_by_the_next_run(register_job):
    job = register_job("expired-lease-job")
    holder = JobRun.objects.create(job=job.name, slot=datetime(2026, 1, 1, tzinfo=UTC))
    first = lease_acquire(job=job.name, run_id=holder.pk, ttl=10)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE scheduler_joblease SET expires_at = now() - interval '1 second'")

    run = job_execute(_delivery(job)).run

    assert run.status == Status.SUCCEEDED
    assert run.fence == first.token + 1


def test_a_transient_error_is_retried_as_the_next_attempt(register_job):
    from tests.scheduler import sample_jobs

    job = register_job("flaky-job", sample_jobs.flaky)
    sample_jobs.FAILURES_LEFT["flaky"] = 1
    first = job_execute(_delivery(job, task_id="f"))

    assert first.run.status == Status.RETRYING
    assert first.retry_in is not None
    assert 1 <= first.retry_in <= 1.2
    assert "OperationalError" in first.run.error

    retried = job_execute(
        _delivery(job, task_id="f", slot=first.run.slot, attempt=2, trigger="retry")
    )
    assert retried.run.attempt == 2
    assert retried.run.status == Status.SUCCEEDED


def test_retries_stop_after_max_retries_and_the_failure_is_recorded(register_job):
    from tests.scheduler import sample_jobs

    job = register_job("always-flaky", sample_jobs.flaky)
    sample_jobs.FAILURES_LEFT["flaky"] = 99
    slot = timezone.now().replace(microsecond=0)
    outcomes = [job_execute(_delivery(job, slot=slot, attempt=n)) for n in (1, 2, 3)]

    assert [o.run.status for o in outcomes] == [Status.RETRYING, Status.RETRYING, Status.FAILED]
    assert outcomes[-1].retry_in is None


def test_a_bug_is_not_retried_and_keeps_its_traceback(register_job):
    from tests.scheduler import sample_jobs

    job = register_job("broken-job", sample_jobs.broken)
    outcome = job_execute(_delivery(job))

    assert outcome.run.status == Status.FAILED
    assert outcome.retry_in is None
    assert "ValueError: the service has a bug" in outcome.run.error
    assert "Traceback" in outcome.run.traceback


def test_a_run_that_lost_its_lease_cannot_record_success(register_job):
    from tests.scheduler import sample_jobs

    job = register_job("stolen-job", sample_jobs.steal_lease)
    run = job_execute(_delivery(job)).run

    assert run.status == Status.LOST
    assert "lost its lease" in run.error


def test_a_beat_delivery_past_its_starting_deadline_is_expired(register_job):
    job = register_job("late-job", starting_deadline=60)
    old_slot = timezone.now().replace(microsecond=0) - timedelta(minutes=10)
    run = job_execute(_delivery(job, slot=old_slot)).run

    assert run.status == Status.EXPIRED
    from tests.scheduler.sample_jobs import CALLS

    assert CALLS == []


@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_deliveries_of_one_slot_run_it_once(register_job):
    job = register_job("race-job")
    slot = timezone.now().replace(second=0, microsecond=0)
    barrier = threading.Barrier(10)
    outcomes: list[str] = []

    def deliver(n: int) -> None:
        barrier.wait()
        try:
            outcomes.append(job_execute(_delivery(job, task_id=f"t{n}", slot=slot)).run.status)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes).count(Status.SUCCEEDED) == 1
    assert sorted(outcomes).count(Status.DUPLICATE) == 9
    assert JobRun.objects.filter(job="race-job", duplicate_of__isnull=True).count() == 1


def test_a_run_inside_a_callers_transaction_leaves_its_commit_durable(register_job):
    # The claim commits asynchronously only on its own; a caller's writes must stay durable.
    job = register_job("nested-job")
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        before = cursor.fetchone()[0]

    assert job_execute(_delivery(job)).run.status == Status.SUCCEEDED

    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == before == "on"


@pytest.mark.django_db(transaction=True)
def test_leases_held_longer_than_their_ttl_stay_held_while_renewed():
    # Two runs at once in one process share its renewer; without renewals both 2 s leases
    # would have expired when their holders check the fence at 3.5 s.
    start = datetime(2026, 1, 1, tzinfo=UTC)
    errors: dict[str, str] = {}

    def hold(job: str) -> None:
        try:
            run = JobRun.objects.create(job=job, slot=start, status=Status.RUNNING)
            lease = lease_acquire(job=job, run_id=run.pk, ttl=2)
            assert lease is not None
            with lease_held(lease) as heartbeat:
                time.sleep(3.5)
                with transaction.atomic():
                    fence_check()
                assert not heartbeat.lost.is_set()
            assert JobRun.objects.get(pk=run.pk).heartbeat_at is not None
        except Exception as exc:  # reported below, from the test's thread
            errors[job] = repr(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=hold, args=(f"renewed-{n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == {}


def _prepared_claims() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements "
            "WHERE statement LIKE '%%scheduler_joblease%%'"
        )
        return cursor.fetchone()[0]


@pytest.mark.parametrize("prepared", [True, False])
def test_the_run_path_prepares_its_statements_unless_turned_off(register_job, prepared):
    # DATABASE_PREPARED_STATEMENTS=0 (for PgBouncer in transaction mode) sets this None.
    job = register_job("prepared-job")
    connection.ensure_connection()
    raw = connection.connection
    default = raw.prepare_threshold
    raw.prepare_threshold = default if prepared else None
    try:
        assert job_execute(_delivery(job)).run.status == Status.SUCCEEDED
    finally:
        raw.prepare_threshold = default

    assert (_prepared_claims() > 0) is prepared


def test_prepared_statements_are_on_by_default():
    connection.ensure_connection()
    assert connection.connection.prepare_threshold == 5


def test_taking_and_releasing_a_lease_updates_its_row_in_place(register_job):
    # No index covers what a run changes on its lease (token, holder, expiry): every run's two
    # lease writes stay HOT, with no new index entries for a row written hundreds of times a second.
    job = register_job("hot-lease-job")
    start = timezone.now().replace(second=0, microsecond=0)
    for minute in range(3):
        run = job_execute(
            _delivery(job, task_id=f"h{minute}", slot=start + timedelta(minutes=minute))
        ).run
        assert run.status == Status.SUCCEEDED

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables"
            " WHERE relname = 'scheduler_joblease'"
        )
        updated, hot = cursor.fetchone()
    assert updated >= 5  # released once, then taken and released twice
    assert hot == updated


def _soft_limit_inside_a_query(swallowed: bool) -> None:
    """SoftTimeLimitExceeded raised by a signal handler while psycopg waits for the server, as
    the worker's SIGUSR1 handler does. `swallowed`: the service takes it for a row's error and
    writes on (as batch services did before RUN_INTERRUPTS), meeting the busy connection."""
    import signal

    from celery.exceptions import SoftTimeLimitExceeded

    def soft_limit(signum, frame):
        raise SoftTimeLimitExceeded()

    previous = signal.signal(signal.SIGALRM, soft_limit)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    try:
        with connection.cursor() as cursor:
            try:
                cursor.execute("SELECT pg_sleep(3)")
            except Exception:
                if not swallowed:
                    raise
                cursor.execute("SELECT 1")  # "another command is already in progress"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def soft_limited(*, now: datetime) -> dict[str, int]:
    _soft_limit_inside_a_query(swallowed=False)
    return {}


def soft_limited_swallowed(*, now: datetime) -> dict[str, int]:
    _soft_limit_inside_a_query(swallowed=True)
    return {}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("service", [soft_limited, soft_limited_swallowed])
def test_a_run_stopped_by_its_soft_time_limit_mid_query_fails_and_is_not_retried(
    register_job, monkeypatch, service
):
    # given a job that retries OperationalError, whose run reaches its soft limit in a query
    job = register_job("soft-limited-job", service)
    # when it runs
    outcome = job_execute(_delivery(job))
    # then the run failed for its time limit and is not retried
    assert outcome.run.status == Status.FAILED, outcome.run.error
    assert outcome.retry_in is None
    assert outcome.run.error.startswith(f"soft time limit ({job.soft_time_limit} s) reached")
    # and the ledger says so, through a connection that works again
    assert JobRun.objects.get(pk=outcome.run.pk).status == Status.FAILED
