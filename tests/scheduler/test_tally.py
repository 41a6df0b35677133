"""The ledger's running totals (scheduler.tally), kept by PostgreSQL triggers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from scheduler.models import JobRun, JobRunTally
from scheduler.services.retention import retention_prune
from scheduler.tally import DURATION_BUCKETS_MS, LATENESS_BUCKETS_MS, job_tallies

Status = JobRun.Status
pytestmark = pytest.mark.django_db
JOB = "sample-noop"


def _finished(status: str = Status.SUCCEEDED, *, age: timedelta = timedelta(0), **fields) -> JobRun:
    moment = timezone.now() - age
    values = {"job": JOB, "slot": moment, "status": status, "finished_at": moment, **fields}
    return JobRun.objects.create(**values)


def test_a_run_counts_once_when_it_ends_not_while_queued_running_or_beating():
    run = JobRun.objects.create(job=JOB, slot=timezone.now())  # queued
    run.status, run.started_at, run.lateness_ms = Status.RUNNING, timezone.now(), 12
    run.save()
    JobRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now())
    assert job_tallies([JOB])[JOB].runs == {}

    run.status, run.finished_at, run.duration_ms = Status.SUCCEEDED, timezone.now(), 150
    run.save()
    run.save()  # saving it again (same status) adds nothing
    JobRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now())

    tally = job_tallies([JOB])[JOB]
    assert tally.runs == {"succeeded": 1}
    assert (tally.duration.count, tally.duration.sum_ms) == (1, 150)
    assert (tally.lateness.count, tally.lateness.sum_ms) == (1, 12)
    assert tally.last_success == run.finished_at


def test_rows_inserted_finished_count_one_by_one_and_in_bulk():
    _finished(Status.MISSED)
    JobRun.objects.bulk_create(
        JobRun(job=JOB, slot=timezone.now() - timedelta(minutes=n), status=Status.SKIPPED_LOCK)
        for n in range(1, 1001)
    )
    assert job_tallies([JOB])[JOB].runs == {"missed": 1, "skipped_lock": 1000}


def test_pruning_the_ledger_never_lowers_the_totals():
    for n in range(5):
        _finished(age=timedelta(days=8, minutes=n), duration_ms=100)
    _finished(Status.FAILED, age=timedelta(days=40), duration_ms=5)
    before = job_tallies([JOB])[JOB]

    pruned = retention_prune(now=timezone.now())

    assert pruned["runs_deleted"] == 6
    assert not JobRun.objects.exists()
    after = job_tallies([JOB])[JOB]
    assert after == before
    assert after.runs == {"succeeded": 5, "failed": 1}


def test_the_triggers_bucket_bounds_are_the_ones_metrics_label():
    """Migration 0006 froze the bounds in SQL; scheduler.tally names them. A value at a bound
    counts in that bound's bucket, one millisecond more in the next."""
    durations = [value for bound in DURATION_BUCKETS_MS for value in (bound, bound + 1)]
    lateness = [value for bound in LATENESS_BUCKETS_MS for value in (bound, bound + 1)]
    lateness = [-3, *lateness]  # a start a little before its slot (clock skew) is on time
    for duration in durations:
        _finished(duration_ms=duration)
    for late in lateness:
        _finished(Status.FAILED, lateness_ms=late, trigger=JobRun.Trigger.BEAT)
    _finished(lateness_ms=999_999_999, trigger=JobRun.Trigger.ADMIN)  # not beat-sent: no lateness

    tally = job_tallies([JOB])[JOB]

    assert tally.duration.cumulative == [
        sum(d <= bound for d in durations) for bound in DURATION_BUCKETS_MS
    ]
    assert (tally.duration.count, tally.duration.sum_ms) == (len(durations), sum(durations))
    assert tally.lateness.cumulative == [
        sum(v <= bound for v in lateness) for bound in LATENESS_BUCKETS_MS
    ]
    assert (tally.lateness.count, tally.lateness.sum_ms) == (len(lateness), sum(lateness))


def test_the_table_has_one_row_per_job_and_status():
    for _ in range(3):
        _finished()
    _finished(Status.FAILED)
    assert sorted(JobRunTally.objects.values_list("status", "runs")) == [
        ("failed", 1),
        ("succeeded", 3),
    ]
