"""Two beat processes side by side: every slot still runs once (the other send is a duplicate)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from scheduler.audit import Actor
from scheduler.models import JobRun, JobSchedule
from scheduler.services.writes import schedules_apply
from tests.scheduler.conftest import close_other_connections
from tests.scheduler.processes import beat_args, celery_process, worker_args

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_two_beats_run_each_slot_once(tmp_path):
    schedules_apply(actor=Actor.system("tests"), profile="test")
    PeriodicTask.objects.exclude(name="sample-noop").update(enabled=False)
    JobSchedule.objects.filter(periodic_task__name="sample-noop").update(offset_seconds=2)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()

    with (
        celery_process(worker_args(tmp_path), tmp_path / "worker.log"),
        celery_process(beat_args(tmp_path / "a"), tmp_path / "beat-a.log"),
        celery_process(beat_args(tmp_path / "b"), tmp_path / "beat-b.log"),
    ):
        started = timezone.now()
        boundary = started.replace(second=0, microsecond=0) + timedelta(minutes=1)
        if (boundary - started).total_seconds() < 8:
            boundary += timedelta(minutes=1)
        slot = boundary + timedelta(seconds=2)
        deadline = time.monotonic() + (slot - started).total_seconds() + 25
        while time.monotonic() < deadline:
            if JobRun.objects.filter(job="sample-noop", slot=slot).count() >= 2:
                break
            time.sleep(0.5)
        time.sleep(2)
    close_other_connections()

    rows = list(JobRun.objects.filter(job="sample-noop", slot=slot))
    sent = [
        log
        for log in ("beat-a.log", "beat-b.log")
        if "Sending due task sample-noop" in (tmp_path / log).read_text()
    ]
    assert len(sent) == 2, "both beats should have sent the slot"
    assert sorted(r.status for r in rows) == [JobRun.Status.DUPLICATE, JobRun.Status.SUCCEEDED]
