"""Job tasks' Celery results: django-celery-results' row, written with the run's fenced success.

The first tests are the conformance check of the seam (scheduler.results.result_row) against the
installed django-celery-results: they fail on an upgrade, saying what to re-check.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from celery import states
from celery.app.task import Context
from celery.result import AsyncResult
from django.db import connection
from django_celery_results.backends.database import DatabaseBackend
from django_celery_results.models import TaskResult

from jobsite.celery import app
from scheduler import results
from scheduler.ledger import run_succeed
from scheduler.locks import Lease, lease_acquire
from scheduler.models import JobRun
from scheduler.results import (
    INSTALLED,
    STORED_WITH_RUN,
    WRITTEN_FOR,
    JobResultBackend,
    ResultRowUnavailable,
    job_result_backend,
    result_row,
)

pytestmark = pytest.mark.django_db

_UPGRADE = (
    "scheduler/results.py builds django-celery-results' row itself from its private helpers "
    "(_get_meta_from_request, _get_extended_properties, Celery's current_task_children). "
    "Re-read DatabaseBackend._store_result and TaskResultManager.store_result of the installed "
    "release against result_row and _COLUMNS, make these tests pass, then set WRITTEN_FOR and "
    "the pin in pyproject.toml."
)
_DATES = ("date_created", "date_started", "date_done")
# Every column but the key and the dates, which are compared within a tolerance.
_COMPARED = [
    f.name for f in TaskResult._meta.concrete_fields if f.name not in ("id", "task_id", *_DATES)
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
        meta={"tenant": "t-1"},
        # Subtasks the task started (Celery appends them to `request.children`).
        _children=[AsyncResult("child-1", app=app), AsyncResult("child-2", app=app)],
    )


def _row(task_id: str) -> dict[str, object]:
    return TaskResult.objects.filter(task_id=task_id).values(*_COMPARED, *_DATES).get()


def _assert_same_row(ours: str, stock: str) -> None:
    mine, theirs = _row(ours), _row(stock)
    for field in _COMPARED:
        assert mine[field] == theirs[field], (
            f"{field}: ours {mine[field]!r}, stock {theirs[field]!r}"
        )
    for field in _DATES:
        assert (mine[field] is None) == (theirs[field] is None), f"{field}: {mine} vs {theirs}"
        if mine[field] is not None:
            assert abs(mine[field] - theirs[field]) < timedelta(seconds=10), field


def test_the_installed_django_celery_results_is_the_release_the_fast_path_was_written_for():
    pinned = re.search(
        r'"django-celery-results==([^"]+)"',
        (Path(__file__).parents[2] / "pyproject.toml").read_text(encoding="utf-8"),
    )

    assert INSTALLED == WRITTEN_FOR, (
        f"django-celery-results {INSTALLED} is installed, the fast path was written for "
        f"{WRITTEN_FOR}. {_UPGRADE}"
    )
    assert pinned is not None, "django-celery-results is no longer pinned exactly. " + _UPGRADE
    assert pinned.group(1) == WRITTEN_FOR, _UPGRADE


def test_job_tasks_use_the_fast_path_with_extended_results_as_settings_configure():
    # The comparisons below cover task_name, args, kwargs and worker only with extended results.
    assert app.conf.result_extended is True
    assert isinstance(job_result_backend(app), JobResultBackend)


def test_the_seam_builds_a_row_with_the_installed_private_helpers():
    backend = JobResultBackend(app=app, url="django-db")
    try:
        row = result_row(
            backend, task_id="t", result={"n": 1}, status=states.SUCCESS, request=_request("t")
        )
    except ResultRowUnavailable as exc:
        pytest.fail(f"{exc}. {_UPGRADE}")

    assert json.loads(row["meta"]) == {
        "tenant": "t-1",
        "children": [[["child-1", None], None], [["child-2", None], None]],
    }
    assert (row["task_name"], row["worker"]) == ("tests.sample_noop", "w1@host")


# Each case stores these (status, result, traceback) in order on one task id, both ways.
_CASES = {
    "succeeded": [(states.SUCCESS, {"run_id": 1, "job": "sample-noop", "result": {"n": 1}}, None)],
    "failed": [(states.FAILURE, KeyError("slot"), "Traceback (most recent call last):\n  ...")],
    "started": [(states.STARTED, {"pid": 42, "hostname": "w1@host"}, None)],
    "started, then succeeded": [
        (states.STARTED, {"pid": 42, "hostname": "w1@host"}, None),
        (states.SUCCESS, [1, "two", None], None),
    ],
    "retried": [(states.RETRY, ValueError("later"), "Traceback ...")],
}


@pytest.mark.parametrize("case", _CASES)
def test_our_store_writes_the_row_django_celery_results_writes(case):
    ours = JobResultBackend(app=app, url="django-db")
    stock = DatabaseBackend(app=app, url="django-db")

    for status, result, traceback in _CASES[case]:
        try:
            ours.store_result("ours", result, status, traceback, request=_request("ours"))
        except ResultRowUnavailable as exc:  # pragma: no cover - only after an upgrade
            pytest.fail(f"{exc}. {_UPGRADE}")
        stock.store_result("stock", result, status, traceback, request=_request("stock"))

    _assert_same_row("ours", "stock")
    assert ours.get_task_meta("ours")["status"] == stock.get_task_meta("stock")["status"]


def test_the_row_written_with_the_success_is_the_one_django_celery_results_writes():
    returned = {"run_id": 1, "job": "sample-noop", "status": "succeeded", "result": {"n": 1}}
    ours = JobResultBackend(app=app, url="django-db")
    stock = DatabaseBackend(app=app, url="django-db")

    built = ours.success_row("ours", returned, _request("ours"))
    assert built is not None, f"the seam could not build the row. {_UPGRADE}"
    sql, params = built
    with connection.cursor() as cursor:
        cursor.execute(f"WITH done AS (SELECT 1 AS id) {sql}", params)
    stock.store_result("stock", returned, states.SUCCESS, request=_request("stock"))

    _assert_same_row("ours", "stock")
    assert ours.get_task_meta("ours")["result"] == returned
    assert ours.get_task_meta("ours")["children"] == stock.get_task_meta("stock")["children"]


def test_a_failed_fence_writes_neither_the_success_nor_the_result():
    run = JobRun.objects.create(
        job="fenced-job", slot=datetime(2026, 1, 1, tzinfo=UTC), status=JobRun.Status.RUNNING
    )
    lease = lease_acquire(job="fenced-job", run_id=run.pk, ttl=60)
    assert lease is not None
    stale = Lease(job=lease.job, token=lease.token - 1, run_id=run.pk, ttl=60)
    backend = JobResultBackend(app=app, url="django-db")
    row = backend.success_row("fenced", {"status": "succeeded"}, _request("fenced"))

    recorded = run_succeed(run, stale, result={}, now=run.slot, also=lambda _run: row)

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


# An upgrade that renames a helper or changes its signature, seen by our backend only (the stock
# backend, as after a real upgrade, still stores its own rows).
def _gone(self: object) -> None:
    raise AttributeError(
        f"{type(self).__name__!r} object has no attribute '_get_meta_from_request'"
    )


_BROKEN_SEAMS = {
    "a helper is gone": ("_get_meta_from_request", property(_gone)),
    "a helper takes other arguments": (
        "_get_extended_properties",
        lambda self, request: {},
    ),
    "a helper returns other fields": (
        "_get_extended_properties",
        lambda self, request, traceback: {"task_name": None},
    ),
}


@pytest.fixture(params=_BROKEN_SEAMS)
def broken_seam(request, monkeypatch):
    name, replacement = _BROKEN_SEAMS[request.param]
    monkeypatch.setattr(JobResultBackend, name, replacement)
    monkeypatch.setattr(results, "_warned", False)


def test_the_seam_reports_internals_that_no_longer_fit(broken_seam):
    with pytest.raises(ResultRowUnavailable, match="was written for"):
        result_row(
            JobResultBackend(app=app, url="django-db"),
            task_id="t",
            result=1,
            status=states.SUCCESS,
            request=_request("t"),
        )


def test_when_the_seam_cannot_build_the_row_results_are_stored_the_stock_way(broken_seam, caplog):
    caplog.set_level(logging.WARNING, logger="scheduler.results")
    ours = JobResultBackend(app=app, url="django-db")
    stock = DatabaseBackend(app=app, url="django-db")

    # The run path writes no row with the success; Celery stores it after the task returned.
    assert ours.success_row("ours", {"n": 1}, _request("ours")) is None
    ours.store_result("ours", {"n": 1}, states.SUCCESS, request=_request("ours"))
    ours.store_result("failed", KeyError("x"), states.FAILURE, "tb", request=_request("failed"))
    stock.store_result("stock", {"n": 1}, states.SUCCESS, request=_request("stock"))

    _assert_same_row("ours", "stock")
    assert TaskResult.objects.get(task_id="failed").status == states.FAILURE
    warnings = [r for r in caplog.records if r.name == "scheduler.results"]
    assert len(warnings) == 1
    assert "stock (slower) way" in warnings[0].getMessage()


def test_another_installed_release_turns_the_fast_path_off(monkeypatch, caplog):
    monkeypatch.setattr(results, "INSTALLED", "9.9.9")
    monkeypatch.setattr(results, "_warned", False)
    caplog.set_level(logging.WARNING, logger="scheduler.results")

    backend = job_result_backend(app)

    assert type(backend) is DatabaseBackend
    assert "9.9.9" in caplog.text
