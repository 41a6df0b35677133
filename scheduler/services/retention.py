"""`retention-pruning`: delete old ledger rows and task results in bounded batches.

Ages per status come from the environment (see README). Their defaults follow the profile
(JOBSITE_PROFILE): production keeps succeeded runs 7 days and failed ones 30; the test profile,
where every job runs every minute, 1 hour and 24 hours. Each batch is one short transaction of
at most BATCH rows chosen with SKIP LOCKED, so pruning never holds locks for long.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import connection, transaction
from django_celery_results.models import TaskResult

from jobsite.env import env_int
from scheduler.conf import profile

BATCH = 5000


DEFAULT_AGES = {
    "production": {"succeeded": 7 * 86400, "failed": 30 * 86400},
    "test": {"succeeded": 3600, "failed": 86400},
}


def _ages() -> dict[str, int]:
    """Seconds to keep ledger rows, by status group."""
    defaults = DEFAULT_AGES[profile()]
    return {
        "succeeded": env_int("RETENTION_SUCCEEDED_SECONDS", defaults["succeeded"], minimum=60),
        "failed": env_int("RETENTION_FAILED_SECONDS", defaults["failed"], minimum=60),
    }


_FAILED = ("failed", "lost", "missed", "expired")


def _delete_batches(table: str, where: str, params: list[object]) -> int:
    total = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            # A MATERIALIZED CTE, not `id IN (SELECT ... LIMIT n)`: the planner may evaluate
            # such a subquery more than once in one statement, and the limit then bounds nothing
            # (games.services.cleanup saw a batch of 10 delete 20).
            cursor.execute(
                f"WITH picked AS MATERIALIZED (SELECT id FROM {table} WHERE {where} "  # noqa: S608
                f"LIMIT {BATCH} FOR UPDATE SKIP LOCKED) "
                f"DELETE FROM {table} WHERE id IN (SELECT id FROM picked)",
                params,
            )
            deleted = cursor.rowcount
        total += deleted
        if deleted < BATCH:
            return total


def retention_prune(*, now: datetime) -> dict[str, int]:
    ages = _ages()
    kept_failed = now - timedelta(seconds=ages["failed"])
    kept_ok = now - timedelta(seconds=ages["succeeded"])
    failed_list = ", ".join(f"'{s}'" for s in _FAILED)
    # Duplicates point at their owner: delete them with it or before it.
    runs = _delete_batches(
        "scheduler_jobrun",
        f"finished_at < %s AND (status NOT IN ({failed_list}) OR finished_at < %s) "  # noqa: S608
        "AND status NOT IN ('queued', 'running') AND NOT EXISTS (SELECT 1 FROM scheduler_jobrun d "
        "WHERE d.duplicate_of_id = scheduler_jobrun.id AND d.finished_at >= %s)",
        [kept_ok, kept_failed, kept_ok],
    )
    results = _delete_batches(
        TaskResult._meta.db_table,
        "date_done < %s AND (status <> 'FAILURE' OR date_done < %s)",
        [kept_ok, kept_failed],
    )
    return {"runs_deleted": runs, "results_deleted": results}
