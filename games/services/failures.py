"""Rows a batch job could not process (`RowFailure`): record, order behind healthy work, clear.

One owner for the rule "a poisoned row never wedges a job": a job processes the rows without a
failure record first, then retries the recorded ones below GAMES_ROW_MAX_ATTEMPTS (fewest
attempts first), and leaves the rest to staff. Recording happens in its own savepoint with a
cleaned error text (`scheduler.errors.error_text`), so recording can never fail the batch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import connection, transaction

from games import conf
from games.models import RowFailure
from scheduler.errors import error_text

_RECORD_SQL = f"""
INSERT INTO {RowFailure._meta.db_table}
    (job, row_id, attempts, last_error, first_failed_at, last_failed_at)
VALUES (%(job)s, %(row_id)s, 1, %(error)s, %(now)s, %(now)s)
ON CONFLICT (job, row_id) DO UPDATE
SET attempts = {RowFailure._meta.db_table}.attempts + 1, last_error = EXCLUDED.last_error,
    last_failed_at = EXCLUDED.last_failed_at
RETURNING attempts
"""  # noqa: S608 -- the table name is ours, values are parameters


@dataclass(frozen=True)
class Failing:
    """A job's recorded rows: `skip` all of them in the healthy pass, then try `retry` (those
    below the attempt limit, fewest attempts first); `parked` are left to staff."""

    retry: list[int]
    parked: list[int]

    @property
    def skip(self) -> list[int]:
        return [*self.retry, *self.parked]


def row_failures(*, job: str) -> Failing:
    """The rows `job` failed on before (few: this is a table of exceptions, not of work)."""
    limit = conf.load().row_max_attempts
    rows = RowFailure.objects.filter(job=job).order_by("attempts", "last_failed_at", "row_id")
    retry, parked = [], []
    for row_id, attempts in rows.values_list("row_id", "attempts"):
        (retry if attempts < limit else parked).append(row_id)
    return Failing(retry=retry, parked=parked)


def row_failure_record(*, job: str, row_id: int, exc: BaseException, now: dt.datetime) -> int:
    """Count one failed attempt of `job` on `row_id` with its error; returns the attempts so far.

    Call it after the row's own transaction or savepoint was rolled back."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            _RECORD_SQL, {"job": job, "row_id": row_id, "error": error_text(exc), "now": now}
        )
        return int(cursor.fetchone()[0])


def row_failures_clear(*, job: str, row_ids: Iterable[int]) -> int:
    """Forget `job`'s failures of `row_ids` (they succeeded, or no longer need the job)."""
    ids = list(row_ids)
    if not ids:
        return 0
    deleted, _ = RowFailure.objects.filter(job=job, row_id__in=ids).delete()
    return deleted
