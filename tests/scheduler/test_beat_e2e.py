"""End to end: real `celery beat` and `celery worker` processes across a minute boundary."""

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
WATCHED = {"sample-noop": 3, "sample-slow": 8}


def test_beat_fires_jobs_at_their_offsets_within_a_second(tmp_path):
    schedules_apply(actor=Actor.system("tests"), profile="test")
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


def test_beat_keeps_firing_the_others_whatever_is_written_into_a_row(tmp_path):
    """Rows poisoned with SQL (around every validator): one before beat loads, three after
    beat sent them, before its next sync. Beat leaves them out, logs them, and lives on."""
    from django_celery_beat.models import CrontabSchedule, PeriodicTasks

    from scheduler.services.schedules import broken_schedules

    schedules_apply(actor=Actor.system("tests"), profile="test")
    PeriodicTask.objects.exclude(name__in=WATCHED).update(enabled=False)
    every_minute = CrontabSchedule.objects.get(minute="*", hour="*")
    poisons = {
        "poisoned-kwargs": {"kwargs": "{bad json"},
        "poisoned-args": {"args": '{"not": "a list"}'},
        "poisoned-task": {"task": "no.such.task"},
    }
    for name in [*poisons, "poisoned-at-load"]:
        PeriodicTask.objects.create(name=name, task="scheduler.ping", crontab=every_minute)
    PeriodicTask.objects.filter(name="poisoned-at-load").update(kwargs='{"user_id": ')
    beat_log = tmp_path / "beat.log"

    with (
        celery_process(worker_args(tmp_path), tmp_path / "worker.log"),
        celery_process(beat_args(tmp_path), beat_log) as beat,
    ):
        # when beat has sent the rows once (at a minute boundary) and they are poisoned then
        deadline = time.monotonic() + 90
        while not all(f"Sending due task {name} " in beat_log.read_text() for name in poisons):
            assert beat.poll() is None, beat_log.read_text()[-3000:]
            assert time.monotonic() < deadline, beat_log.read_text()[-3000:]
            time.sleep(0.2)
        poisoned_at = timezone.now()
        for name, fields in poisons.items():
            PeriodicTask.objects.filter(name=name).update(**fields)
        PeriodicTasks.update_changed()  # beat syncs (saves what it sent) and reloads
        # then the watched jobs fire at the next minute too, and beat is still alive
        boundary = poisoned_at.replace(second=0, microsecond=0) + timedelta(minutes=1)
        deadline = time.monotonic() + (boundary - timezone.now()).total_seconds() + 30
        while time.monotonic() < deadline:
            done = JobRun.objects.filter(job__in=WATCHED, slot__gte=boundary, status="succeeded")
            if {r.job for r in done} == set(WATCHED):
                break
            time.sleep(0.5)
        alive = beat.poll() is None
    close_other_connections()

    log = beat_log.read_text()
    assert alive, log[-3000:]
    assert "raised exception" not in log
    done = JobRun.objects.filter(job__in=WATCHED, slot__gte=boundary, status="succeeded")
    assert {r.job for r in done} == set(WATCHED), log[-3000:]
    for name in [*poisons, "poisoned-at-load"]:
        assert f"schedule {name} is not sent until fixed" in log
    assert set(broken_schedules()) == {*poisons, "poisoned-at-load"}  # W003 and the admin list
