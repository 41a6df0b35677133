"""Job tasks' Celery results: django-celery-results' table and encoding, one statement per write.

django-celery-results stores a result with `get_or_create` and then `save`: a SELECT, then BEGIN,
INSERT and COMMIT, four round trips to PostgreSQL for every task. Job tasks write the same row
(same columns, same encoding, same extended fields) with one `INSERT ... ON CONFLICT (task_id) DO
UPDATE`: no IntegrityError race between the SELECT and the INSERT to retry. A succeeded run goes
further: its row is a CTE of the run path's fenced success statement, so the ledger's `succeeded`
and the Celery result commit together, once. Everything that reads results (AsyncResult, the admin,
retention) is django-celery-results' own code on the same table.

The seam. Building the row's values needs django-celery-results' private helpers
(`_get_meta_from_request`, `_get_extended_properties`) and Celery's undocumented
`current_task_children`; `result_row` is the only code in jobsite that calls them, and nothing
outside this module imports them. It was written against django-celery-results `WRITTEN_FOR`
(pinned exactly in pyproject.toml); tests/scheduler/test_results.py fails on any other version,
and checks field by field that the row is the one `DatabaseBackend.store_result` writes. At run
time a mismatch degrades speed, never correctness: another installed version, or helpers that
are gone or changed their signature, make job tasks store results through the stock backend
(after the ledger's success, in its own statements), with one logged warning.
"""

from __future__ import annotations

import logging
from functools import cached_property
from importlib.metadata import version
from typing import Any

from celery import states
from django.db import connections, router
from django.utils import timezone
from django_celery_results.backends.database import DatabaseBackend
from django_celery_results.models import TaskResult

logger = logging.getLogger(__name__)

# The django-celery-results release `result_row` was checked against. To upgrade: install the new
# release, run tests/scheduler/test_results.py, re-read `DatabaseBackend._store_result` and the
# manager's `store_result` against `result_row` and `_COLUMNS`, then change this and the pin.
WRITTEN_FOR = "2.6.0"
INSTALLED = version("django-celery-results")

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
# What `_get_extended_properties` returns: the columns above it fills (traceback included).
_EXTENDED = frozenset(
    {"periodic_task_name", "task_args", "task_kwargs", "task_name", "traceback", "worker"}
)


class ResultRowUnavailable(RuntimeError):
    """django-celery-results' internals no longer fit `result_row` (it was upgraded)."""


def result_row(
    backend: DatabaseBackend,
    *,
    task_id: str,
    result: Any,
    status: str,
    traceback: str | None = None,
    request: Any = None,
) -> dict[str, Any]:
    """The columns django-celery-results' `store_result` writes for this result, by name.

    Values are encoded as `DatabaseBackend._store_result` encodes them (result, meta with the
    request's children, the extended fields under `result_extended`); `date_done` and
    `date_created` are now, `date_started` too for STARTED. Raises `ResultRowUnavailable` when
    the private helpers it calls are gone, take other arguments or return another shape.
    """
    try:
        content_type, content_encoding, encoded = backend.encode_content(result)
        meta = {
            **backend._get_meta_from_request(request),
            "children": backend.current_task_children(request),
        }
        _, _, encoded_meta = backend.encode_content(meta)
        extended = dict(backend._get_extended_properties(request, traceback))
    except (AttributeError, TypeError, ValueError) as exc:
        raise ResultRowUnavailable(
            f"django-celery-results {INSTALLED} (scheduler/results.py was written for "
            f"{WRITTEN_FOR}): its private result helpers no longer fit: {exc!r}"
        ) from exc
    if set(extended) != _EXTENDED:
        raise ResultRowUnavailable(
            f"django-celery-results {INSTALLED} (scheduler/results.py was written for "
            f"{WRITTEN_FOR}): _get_extended_properties returned {sorted(extended)}, "
            f"expected {sorted(_EXTENDED)}"
        )
    now = timezone.now()
    row: dict[str, Any] = {
        "task_id": task_id,
        "status": status,
        "result": encoded,
        "traceback": traceback,
        "meta": encoded_meta,
        "content_encoding": content_encoding,
        "content_type": content_type,
        **extended,
        "date_done": now,
        "date_created": now,
    }
    if status == states.STARTED:
        row["date_started"] = now
    return row


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

_warned = False


def _warn_once(exc: Exception) -> None:
    global _warned
    if not _warned:
        _warned = True
        logger.warning("job results are stored the stock (slower) way: %s", exc)


class JobResultBackend(DatabaseBackend):
    """django-celery-results' database backend with a single-statement store.

    A job task that succeeds writes its result in the run path's fenced success statement (one
    commit for the ledger and the result, `success_row`) and marks its request so that the store
    Celery makes after the task returned does not write the same row again.
    """

    @cached_property
    def _stock(self) -> DatabaseBackend:
        """django-celery-results' own backend, for results the seam cannot build."""
        return DatabaseBackend(app=self.app, url=self.url)

    def success_row(
        self, task_id: str, result: Any, request: Any
    ) -> tuple[str, dict[str, Any]] | None:
        """SQL and parameters that store `result` as the task's SUCCESS, for each row of `done`
        (a CTE of the statement that embeds it); None when the seam cannot build the row: then
        Celery stores the result itself after the task returned."""
        try:
            row = result_row(
                self, task_id=task_id, result=result, status=states.SUCCESS, request=request
            )
        except ResultRowUnavailable as exc:
            _warn_once(exc)
            return None
        return _UPSERT_WITH_RUN, {f"r_{column}": value for column, value in row.items()}

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
        try:
            row = result_row(
                self,
                task_id=task_id,
                result=result,
                status=status,
                traceback=traceback,
                request=request,
            )
        except ResultRowUnavailable as exc:
            _warn_once(exc)
            return self._stock._store_result(task_id, result, status, traceback, request, using)
        alias = using or router.db_for_write(TaskResult)
        with connections[alias].cursor() as cursor:
            cursor.execute(
                _UPSERT[status == states.STARTED],
                {f"r_{column}": value for column, value in row.items()},
            )
        return row["result"]


# Set on a task's request when its SUCCESS result was stored with the run's success.
STORED_WITH_RUN = "jobsite_result_stored_with_run"


def job_result_backend(app: Any) -> Any:
    """The backend for job tasks: ours when the app stores results with django-celery-results
    at the release `result_row` was written for; the app's own backend otherwise."""
    backend = app.backend
    if type(backend) is not DatabaseBackend:
        return backend
    if INSTALLED != WRITTEN_FOR:
        _warn_once(
            ResultRowUnavailable(
                f"django-celery-results {INSTALLED} is installed, scheduler/results.py was "
                f"written for {WRITTEN_FOR}: run tests/scheduler/test_results.py"
            )
        )
        return backend
    return JobResultBackend(app=app, url=backend.url)
