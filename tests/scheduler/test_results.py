"""Job tasks' Celery results: django-celery-results' row, written with the run's fenced success."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from celery import states
from celery.app.task import Context
from django.db import connection
from django_celery_results.backends.database import DatabaseBackend
from django_celery_results.models import TaskResult

from jobsite.celery import app
from scheduler.locks import Lease, lease_acquire, succeed_and_release
from scheduler.models import JobRun
from scheduler.results import STORED_WITH_RUN, JobResultBackend

pytestmark = pytest.mark.django_db

_COMPARED = [
    "status",
    "result",
    "traceback",
    "meta",
    "content_encoding",
    "content_type",
    "periodic_task_name",
    "task_name",
    "task_args",
    "task_kwargs",
    "worker",
    "date_started",
]


def _request(task_id: str) -> Context:
    return Context(
        id=task_id,
        task="tests.sample_noop",
        args=[],
        kwargs={"slot": "2026-01-01T00:00:00+00:00", "trigger": "api"},
        argsrepr="()",
        kwargsrepr="{'slot': '2026-01-01T00:00:00+00:00', 'trigger': 'api'}",
        hostname="w1@host",
        periodic_task_name="sample-noop",
        delivery_info={"routing_key": "default"},
    )


def _row(task_id: str) -> dict[str, object]:
    return TaskResult.objects.filter(task_id=task_id).values(*_COMPARED).get()


def test_the_row_written_with_the_success_is_the_one_django_celery_results_writes():
    returned = {"run_id": 1, "job": "sample-noop", "status": "succeeded", "result": {"n": 1}}
    ours = JobResultBackend(app=app, url="django-db")
    stock = DatabaseBackend(app=app, url="django-db")

    sql, params = ours.success_row("ours", returned, _request("ours"))
    with connection.cursor() as cursor:
        cursor.execute(f"WITH done AS (SELECT 1 AS id) {sql}", params)
    stock.store_result("stock", returned, states.SUCCESS, request=_request("stock"))

    assert _row("ours") == _row("stock")
    assert ours.get_task_meta("ours")["result"] == returned


def test_a_failed_fence_writes_neither_the_success_nor_the_result():
    run = JobRun.objects.create(
        job="fenced-job", slot=datetime(2026, 1, 1, tzinfo=UTC), status=JobRun.Status.RUNNING
    )
    lease = lease_acquire(job="fenced-job", run_id=run.pk, ttl=60)
    assert lease is not None
    stale = Lease(job=lease.job, token=lease.token - 1, run_id=run.pk, ttl=60)
    backend = JobResultBackend(app=app, url="django-db")
    row = backend.success_row("fenced", {"status": "succeeded"}, _request("fenced"))

    recorded = succeed_and_release(stale, now=run.slot, duration_ms=1, result="{}", also=row)

    run.refresh_from_db()
    assert not recorded
    assert run.status == JobRun.Status.RUNNING
    assert not TaskResult.objects.filter(task_id="fenced").exists()


def test_celery_does_not_store_a_result_the_run_already_stored():
    backend = JobResultBackend(app=app, url="django-db")
    request = _request("once")
    sql, params = backend.success_row("once", {"from": "run"}, request)
    with connection.cursor() as cursor:
        cursor.execute(f"WITH done AS (SELECT 1 AS id) {sql}", params)
    setattr(request, STORED_WITH_RUN, True)

    backend.mark_as_done("once", {"from": "celery"}, request=request)

    assert backend.get_task_meta("once")["result"] == {"from": "run"}
