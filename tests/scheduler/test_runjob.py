"""`manage.py runjob`: what a manual run records (docs/jobs.md, Manual runs)."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django_celery_results.models import TaskResult

from scheduler.models import JobRun

pytestmark = pytest.mark.django_db


def test_a_sync_run_is_recorded_in_the_ledger_only_and_writes_no_celery_result():
    out = io.StringIO()

    call_command("runjob", "retention-pruning", "--sync", stdout=out)

    run = JobRun.objects.get(job="retention-pruning")
    assert (run.status, run.trigger, run.worker) == ("succeeded", "manual", "runjob --sync")
    assert run.task_id.startswith("sync-")
    assert run.reason.startswith("manage.py runjob by ")
    assert not TaskResult.objects.exists()
    assert f"run {run.pk} succeeded" in out.getvalue()


def test_runjob_records_the_reason_it_was_given():
    call_command("runjob", "live-stats-sync", "--sync", "--reason", "checking INC-42")
    run = JobRun.objects.get(job="live-stats-sync")
    assert run.reason.startswith("manage.py runjob by ")
    assert run.reason.endswith(": checking INC-42")


def test_runjob_refuses_a_reason_longer_than_the_ledger_keeps():
    with pytest.raises(CommandError, match="--reason is too long"):
        call_command("runjob", "live-stats-sync", "--sync", "--reason", "x" * 300)
    assert not JobRun.objects.exists()
