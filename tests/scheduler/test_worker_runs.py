"""The run path on a real Celery worker, through the real Redis broker."""

from __future__ import annotations

import itertools
import logging
import time
from datetime import timedelta

import pytest
from celery.contrib.testing.worker import start_worker
from celery.result import AsyncResult
from django.utils import timezone
from django_celery_results.models import TaskResult

from jobsite.celery import app
from scheduler import results
from scheduler.models import JobRun
from scheduler.registry import get_job
from scheduler.results import JobResultBackend
from scheduler.services.dispatch import job_dispatch, job_trigger
from tests.scheduler.beat_slots import schedule_slot
from tests.scheduler.conftest import close_other_connections

Status = JobRun.Status
pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@pytest.fixture
def worker():
    with start_worker(
        app,
        pool="threads",
        concurrency=4,
        perform_ping_check=False,
        queues=["default", "long"],
        shutdown_timeout=20,
    ) as w:
        yield w
    close_other_connections()


def test_concurrent_triggers_of_one_job_never_overlap(worker):
    job = get_job("sample-slow")
    base = timezone.now().replace(microsecond=0)
    runs = [
        job_dispatch(job=job, slot=base + timedelta(seconds=n), trigger="api") for n in range(6)
    ]
    ids = [r.pk for r in runs]
    _wait_for(
        lambda: not JobRun.objects.filter(pk__in=ids, status__in=["queued", "running"]).exists()
    )

    finished = JobRun.objects.filter(pk__in=ids)
    succeeded = sorted(
        (r.result["started"], r.result["ended"]) for r in finished if r.status == Status.SUCCEEDED
    )
    assert succeeded, [r.status for r in finished]
    assert {r.status for r in finished} <= {Status.SUCCEEDED, Status.SKIPPED_LOCK}
    assert any(r.status == Status.SKIPPED_LOCK for r in finished)
    for (_, ended), (started, _) in itertools.pairwise(succeeded):
        assert ended <= started, "two runs of one job overlapped"


def test_a_manual_run_goes_through_the_worker_with_its_result_stored(worker):
    job = get_job("sample-noop")
    run = job_trigger(job=job, trigger="api", reason="test")
    _wait_for(lambda: JobRun.objects.get(pk=run.pk).status == Status.SUCCEEDED)

    run.refresh_from_db()
    assert run.worker
    result = TaskResult.objects.get(task_id=run.task_id)
    assert result.status == "SUCCESS"
    assert result.task_name == "tests.sample_noop"
    returned = {"run_id": run.pk, "job": job.name, "status": "succeeded", "result": run.result}
    assert AsyncResult(run.task_id, app=app).get(timeout=10) == returned


def test_a_run_whose_result_row_the_seam_cannot_build_still_stores_its_result(
    worker, monkeypatch, caplog
):
    # As after an upgrade of django-celery-results that changed a private helper's signature.
    monkeypatch.setattr(JobResultBackend, "_get_extended_properties", lambda self, request: {})
    monkeypatch.setattr(results, "_warned", False)
    caplog.set_level(logging.WARNING, logger="scheduler.results")
    job = get_job("sample-noop")
    run = job_trigger(job=job, trigger="api", reason="test")
    _wait_for(lambda: TaskResult.objects.filter(task_id=run.task_id).exists())

    run.refresh_from_db()
    assert run.status == Status.SUCCEEDED
    result = TaskResult.objects.get(task_id=run.task_id)
    assert (result.status, result.task_name) == ("SUCCESS", "tests.sample_noop")
    returned = {"run_id": run.pk, "job": job.name, "status": "succeeded", "result": run.result}
    assert AsyncResult(run.task_id, app=app).get(timeout=10) == returned
    assert "stock (slower) way" in caplog.text


def test_the_same_slot_sent_twice_runs_once(worker):
    job = get_job("sample-noop")
    slot = schedule_slot(job, timezone.now().replace(microsecond=0))
    kwargs = {"slot": slot.isoformat(), "trigger": "beat"}
    first = app.send_task(job.task, kwargs=kwargs)
    second = app.send_task(job.task, kwargs=kwargs)
    _wait_for(
        lambda: (
            JobRun.objects.filter(job=job.name).count() == 2
            and not JobRun.objects.filter(job=job.name, status="running").exists()
        )
    )

    rows = {r.task_id: r.status for r in JobRun.objects.filter(job=job.name)}
    assert sorted(rows.values()) == [Status.DUPLICATE, Status.SUCCEEDED]
    assert set(rows) == {first.id, second.id}


def test_a_message_that_expired_before_it_ran_is_recorded_expired(worker):
    job = get_job("sample-noop")
    slot = schedule_slot(job, timezone.now().replace(microsecond=0) - timedelta(minutes=10))
    app.send_task(
        job.task,
        kwargs={"slot": slot.isoformat(), "trigger": "beat"},
        expires=timezone.now() - timedelta(seconds=1),
    )
    _wait_for(lambda: JobRun.objects.filter(job=job.name, slot=slot).exists())

    run = JobRun.objects.get(job=job.name, slot=slot)
    assert run.status == Status.EXPIRED
    assert "expired before a worker ran it" in run.error


@pytest.mark.parametrize(
    ("args", "kwargs", "named"),
    [
        ((), {"foo": 1}, "argument 'foo'"),
        ((7,), {}, "positional argument 7"),
    ],
)
def test_a_message_with_arguments_a_job_does_not_take_is_refused_in_the_ledger(
    worker, args, kwargs, named
):
    # given a message as `celery call` or Flower's send-task would send it, with a real slot
    job = get_job("sample-noop")
    slot = schedule_slot(job, timezone.now().replace(microsecond=0))
    sent = app.send_task(
        job.task, args=list(args), kwargs={"slot": slot.isoformat(), "trigger": "beat", **kwargs}
    )
    # when a worker receives it, then its ledger row says what was wrong, and nothing ran
    _wait_for(lambda: JobRun.objects.filter(task_id=sent.id).exists())
    run = JobRun.objects.get(task_id=sent.id)
    assert run.status == Status.REFUSED
    assert f"{named} not taken by a job" in run.error
    assert not JobRun.objects.filter(job=job.name, status=Status.SUCCEEDED).exists()
