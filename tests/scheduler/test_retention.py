"""retention-pruning deletes old ledger rows and task results in batches, by status age."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_results.models import TaskResult

from scheduler.models import JobRun
from scheduler.services import retention
from scheduler.services.retention import retention_prune

Status = JobRun.Status
pytestmark = pytest.mark.django_db


def _run(age: timedelta, status: str, **extra) -> JobRun:
    now = timezone.now()
    return JobRun.objects.create(
        job="sample-noop", slot=now - age, status=status, finished_at=now - age, **extra
    )


def test_old_rows_go_by_status_age_and_recent_or_unfinished_ones_stay(monkeypatch):
    monkeypatch.setattr(retention, "BATCH", 2)  # several batches
    old_ok = [_run(timedelta(days=8, seconds=n), Status.SUCCEEDED) for n in range(5)]
    old_failed = _run(timedelta(days=8), Status.FAILED)
    very_old_failed = _run(timedelta(days=31), Status.FAILED)
    recent = _run(timedelta(days=1), Status.SUCCEEDED)
    running = JobRun.objects.create(
        job="sample-noop", slot=timezone.now() - timedelta(days=9), status=Status.RUNNING
    )
    TaskResult.objects.create(task_id="old", status="SUCCESS")
    TaskResult.objects.create(task_id="new", status="SUCCESS")
    # date_done is auto_now: age the old one afterwards.
    TaskResult.objects.filter(task_id="old").update(date_done=timezone.now() - timedelta(days=8))

    counts = retention_prune(now=timezone.now())

    left = set(JobRun.objects.values_list("pk", flat=True))
    assert counts == {"runs_deleted": 6, "results_deleted": 1}
    assert left == {old_failed.pk, recent.pk, running.pk}
    assert not any(run.pk in left for run in [*old_ok, very_old_failed])
    assert list(TaskResult.objects.values_list("task_id", flat=True)) == ["new"]


def test_pruning_twice_changes_nothing_the_second_time():
    _run(timedelta(days=8), Status.SUCCEEDED)
    retention_prune(now=timezone.now())
    assert retention_prune(now=timezone.now()) == {"runs_deleted": 0, "results_deleted": 0}


def test_a_duplicate_row_goes_with_its_owner():
    owner = _run(timedelta(days=8), Status.SUCCEEDED)
    _run(timedelta(days=8), Status.DUPLICATE, duplicate_of=owner)
    retention_prune(now=timezone.now())
    assert not JobRun.objects.exists()


def test_the_test_profile_keeps_runs_for_an_hour(monkeypatch):
    monkeypatch.setenv("JOBSITE_PROFILE", "test")
    gone = _run(timedelta(hours=2), Status.SUCCEEDED)
    kept_failed = _run(timedelta(hours=2), Status.FAILED)

    retention_prune(now=timezone.now())

    assert list(JobRun.objects.values_list("pk", flat=True)) == [kept_failed.pk]
    assert gone.pk != kept_failed.pk


def test_an_unknown_profile_is_an_error_naming_the_variable(monkeypatch):
    from jobsite.env import ConfigError

    monkeypatch.setenv("JOBSITE_PROFILE", "staging")
    with pytest.raises(ConfigError, match="JOBSITE_PROFILE='staging'"):
        retention_prune(now=timezone.now())
