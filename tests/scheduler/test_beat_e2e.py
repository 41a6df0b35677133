"""End to end: real `celery beat` and `celery worker` processes across a minute boundary."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from scheduler.models import JobRun, JobSchedule
from scheduler.services.schedules import schedules_apply
from tests.scheduler.conftest import close_other_connections
from tests.scheduler.processes import beat_args, celery_process, worker_args

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
WATCHED = {"sample-noop": 3, "sample-slow": 8}


def test_beat_fires_jobs_at_their_offsets_within_a_second(tmp_path):
    schedules_apply(profile="test")
    PeriodicTask.objects.exclude(name__in=WATCHED).update(enabled=False)
    for name, offset in WATCHED.items():
        JobSchedule.objects.filter(periodic_task__name=name).update(offset_seconds=offset)

    with (
        celery_process(worker_args(tmp_path), tmp_path / "worker.log"),
        celery_process(beat_args(tmp_path), tmp_path / "beat.log"),
    ):
        started = timezone.now()
        boundary = started.replace(second=0, microsecond=0) + timedelta(minutes=1)
        if (boundary - started).total_seconds() < 8:  # leave beat time to start
            boundary += timedelta(minutes=1)
        deadline = time.monotonic() + (boundary - started).total_seconds() + 30
        while time.monotonic() < deadline:
            done = JobRun.objects.filter(
                job__in=WATCHED, slot__gte=boundary, status=JobRun.Status.SUCCEEDED
            )
            if {r.job for r in done} == set(WATCHED):
                break
            time.sleep(0.5)
    close_other_connections()

    beat_log = (tmp_path / "beat.log").read_text()
    runs = {
        r.job: r
        for r in JobRun.objects.filter(
            job__in=WATCHED, slot__gte=boundary, status=JobRun.Status.SUCCEEDED
        )
    }
    assert set(runs) == set(WATCHED), beat_log[-3000:]
    for name, offset in WATCHED.items():
        run = runs[name]
        assert run.slot == boundary + timedelta(seconds=offset)
        assert run.trigger == "beat"
        assert 0 <= run.lateness_ms < 1000, (name, run.lateness_ms)
    assert "offset :03  sample-noop" in beat_log
