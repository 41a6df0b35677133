"""Job tasks' Celery results: django-celery-results' table and encoding, one statement per write.

django-celery-results stores a result with `get_or_create` and then `save`: a SELECT, then BEGIN,
INSERT and COMMIT, four round trips to PostgreSQL for every task. Job tasks write the same row
(same columns, same encoding, same extended fields) with one `INSERT ... ON CONFLICT (task_id) DO
UPDATE`: no IntegrityError race between the SELECT and the INSERT to retry. A succeeded run goes
further: its row is a CTE of the run path's fenced success statement, so the ledger's `succeeded`
and the Celery result commit together, once (tests/scheduler/test_results.py checks the row is the
one django-celery-results writes). Everything that reads results (AsyncResult, the admin,
retention) is django-celery-results' own code on the same table.
"""

from __future__ import annotations

from typing import Any

from celery import states
from django.db import connections, router
from django.utils import timezone
from django_celery_results.backends.database import DatabaseBackend
from django_celery_results.models import TaskResult

# Updated on conflict: every column django-celery-results' `store_result` sets on an existing row
# (date_created stays; date_started only when the new state is STARTED, as there).
_COLUMNS = (
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
    "date_done",
)


def _upsert_sql(with_started: bool, source: str) -> str:
    """`INSERT ... SELECT <named placeholders> <source> ON CONFLICT (task_id) DO UPDATE ...`."""
    columns = ("task_id", *_COLUMNS, "date_created") + (("date_started",) if with_started else ())
    updated = _COLUMNS + (("date_started",) if with_started else ())
    # Identifiers are the constants above and the model's table name: no outside input.
    return (
        f"INSERT INTO {TaskResult._meta.db_table} ({', '.join(columns)}) "
        f"SELECT {', '.join(f'%(r_{column})s' for column in columns)} {source} "
        f"ON CONFLICT (task_id) DO UPDATE SET "
        + ", ".join(f"{column} = EXCLUDED.{column}" for column in updated)
    )


_UPSERT = {started: _upsert_sql(started, "") for started in (False, True)}
_UPSERT_WITH_RUN = _upsert_sql(False, "FROM done")


class JobResultBackend(DatabaseBackend):
    """django-celery-results' database backend with a single-statement store.

    A job task that succeeds writes its result in the run path's fenced success statement (one
    commit for the ledger and the result, `success_row`) and marks its request so that the store
    Celery makes after the task returned does not write the same row again.
    """

    def _row(self, task_id: str, result: Any, status: str, traceback: str | None, request: Any):
        # The same values django-celery-results' `_store_result` passes to its manager.
        content_type, content_encoding, encoded = self.encode_content(result)
        meta = {
            **self._get_meta_from_request(request),
            "children": self.current_task_children(request),
        }
        _, _, encoded_meta = self.encode_content(meta)
        now = timezone.now()
        values: dict[str, Any] = {
            "task_id": task_id,
            "status": status,
            "result": encoded,
            "traceback": traceback,
            "meta": encoded_meta,
            "content_encoding": content_encoding,
            "content_type": content_type,
            **self._get_extended_properties(request, traceback),
            "date_done": now,
            "date_created": now,
        }
        if status == states.STARTED:
            values["date_started"] = now
        return encoded, {f"r_{column}": value for column, value in values.items()}

    def success_row(self, task_id: str, result: Any, request: Any) -> tuple[str, dict[str, Any]]:
        """SQL and parameters that store `result` as the task's SUCCESS, for each row of `done`
        (a CTE of the statement that embeds it)."""
        _, params = self._row(task_id, result, states.SUCCESS, None, request)
        return _UPSERT_WITH_RUN, params

    def _store_result(
        self,
        task_id: str,
        result: Any,
        status: str,
        traceback: str | None = None,
        request: Any = None,
        using: str | None = None,
    ) -> Any:
        if status == states.SUCCESS and getattr(request, STORED_WITH_RUN, False):
            return result  # written with the run's success, in the same commit
        encoded, params = self._row(task_id, result, status, traceback, request)
        alias = using or router.db_for_write(TaskResult)
        with connections[alias].cursor() as cursor:
            cursor.execute(_UPSERT[status == states.STARTED], params)
        return encoded


# Set on a task's request when its SUCCESS result was stored with the run's success.
STORED_WITH_RUN = "jobsite_result_stored_with_run"


def job_result_backend(app: Any) -> Any:
    """The backend for job tasks: ours when the app stores results with django-celery-results."""
    backend = app.backend
    if type(backend) is DatabaseBackend:
        return JobResultBackend(app=app, url=backend.url)
    return backend
