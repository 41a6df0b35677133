"""`manage.py runjob NAME --sync`: what an inline manual run records (docs/jobs.md, Manual runs)."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
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
