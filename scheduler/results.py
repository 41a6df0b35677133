"""Job tasks' Celery results: django-celery-results' table and encoding, one statement per write.

django-celery-results stores a result with `get_or_create` and then `save`: a SELECT, then BEGIN,
INSERT and COMMIT, four round trips to PostgreSQL for every task. Job tasks write the same row
(same columns, same encoding, same extended fields) with one `INSERT ... ON CONFLICT (task_id) DO
UPDATE` in autocommit: one round trip, still one atomic write, and no IntegrityError race between
the SELECT and the INSERT to retry. Everything that reads results (AsyncResult, the admin,
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


def _upsert_sql(with_started: bool) -> str:
    columns = ("task_id", *_COLUMNS, "date_created") + (("date_started",) if with_started else ())
    updated = _COLUMNS + (("date_started",) if with_started else ())
    # Identifiers are the constants above and the model's table name: no outside input.
    return (
        f"INSERT INTO {TaskResult._meta.db_table} ({', '.join(columns)}) "  # noqa: S608
        f"VALUES ({', '.join(['%s'] * len(columns))}) "
        f"ON CONFLICT (task_id) DO UPDATE SET "
        + ", ".join(f"{column} = EXCLUDED.{column}" for column in updated)
    )


_UPSERT = {False: _upsert_sql(False), True: _upsert_sql(True)}


class JobResultBackend(DatabaseBackend):
    """django-celery-results' database backend with a single-statement store."""

    def _store_result(
        self,
        task_id: str,
        result: Any,
        status: str,
        traceback: str | None = None,
        request: Any = None,
        using: str | None = None,
    ) -> Any:
        # The same values django-celery-results' `_store_result` passes to its manager.
        content_type, content_encoding, encoded = self.encode_content(result)
        meta = {
            **self._get_meta_from_request(request),
            "children": self.current_task_children(request),
        }
        _, _, encoded_meta = self.encode_content(meta)
        values: dict[str, Any] = {
            "status": status,
            "result": encoded,
            "traceback": traceback,
            "meta": encoded_meta,
            "content_encoding": content_encoding,
            "content_type": content_type,
            **self._get_extended_properties(request, traceback),
        }
        now = timezone.now()
        values["date_done"] = now
        started = status == states.STARTED
        params = [task_id, *(values[column] for column in _COLUMNS), now]
        if started:
            params.append(now)
        alias = using or router.db_for_write(TaskResult)
        with connections[alias].cursor() as cursor:
            cursor.execute(_UPSERT[started], params)
        return encoded


def job_result_backend(app: Any) -> Any:
    """The backend for job tasks: ours when the app stores results with django-celery-results."""
    backend = app.backend
    if type(backend) is DatabaseBackend:
        return JobResultBackend(app=app, url=backend.url)
    return backend
