"""`manage.py runjob`: what a manual run records (docs/jobs.md, Manual runs)."""

from __future__ import annotations

import getpass
import io

import pytest
from django.core.management import CommandError, call_command
from django_celery_results.models import TaskResult

from scheduler.models import AuditEvent, JobRun

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


def test_runjob_is_audited_as_the_os_user_on_behalf_of_user(django_user_model):
    django_user_model.objects.create_user(username="oncall")

    call_command("runjob", "live-stats-sync", "--sync", "--reason", "INC-7", stdout=io.StringIO())
    call_command("runjob", "cleanup", "--user", "oncall", stdout=io.StringIO())

    sync, queued = AuditEvent.objects.filter(action="job.run").order_by("id")
    assert (sync.via, sync.username, sync.user_id, sync.reason) == (
        "cli",
        getpass.getuser(),
        None,
        "INC-7",
    )
    assert sync.after["run_id"] == JobRun.objects.get(trigger="manual", status="succeeded").pk
    assert (queued.via, queued.username) == ("cli", "oncall")
    queued_run = JobRun.objects.get(pk=queued.after["run_id"])
    assert queued_run.status == "queued"
    assert queued_run.reason == f"manage.py runjob by {getpass.getuser()}"
