"""`retention-pruning`: delete old ledger rows and task results in bounded batches.

Ages per status come from the environment (see docs/jobs.md). Their defaults follow the profile
(JOBSITE_PROFILE): production keeps succeeded runs 7 days and failed ones 30; the test profile,
where every job runs every minute, 1 hour and 24 hours. `queued` and `running` rows are never
deleted. Each batch is one short transaction of at most BATCH rows chosen with SKIP LOCKED, so
pruning never holds locks for long, skips rows someone else holds, and waits at most LOCK_TIMEOUT
for any other lock.

References to a ledger row, and what pruning does with each (so that no batch layout can fail):

- `JobRun.duplicate_of` (a delivery that did not run names the run owning its slot): duplicates
  are deleted first, then owners that no row names any more. An owner stays while one of its
  duplicates is younger than the retention age, so a duplicate never loses its owner. (A raw
  DELETE does not run Django's `on_delete`; deleting owner and duplicate in different batches
  broke the deferred foreign key at COMMIT and wedged every later run.)
- `JobLease.holder`: a failed or lost run stays named on its job's lease until the next
  acquisition. A run that is old enough to delete no longer holds an expired lease, so its name is
  cleared (`scheduler.locks.lease_holders_forget`) in the batch that deletes it; a run still named
  by an unexpired lease is kept until it expires.
- `monitoring.Incident` refers to runs by id and keeps their slots, summary, detail and count
  itself (no foreign key, by design): an incident outlives its runs and the admin shows such a run
  as "pruned"; an open incident counts on from its stored count, so pruning never lowers it.
- Anything else (a table this code does not know with a foreign key to the ledger, a trigger):
  foreign keys are checked at each statement (SET CONSTRAINTS ALL IMMEDIATE), and a batch that
  fails is split in halves inside savepoints until the row that cannot go is found; that row is
  left, counted as `undeletable` and logged, and the rest of the batch is deleted. A batch that
  waits for a lock longer than LOCK_TIMEOUT is treated the same way.

No migration changes `on_delete`: the ORM already cascades to duplicates and clears holders
(`SET_NULL`), and this SQL keeps the same promises by hand, in the transaction that deletes. A
database-level ON DELETE would need hand-written constraint SQL that Django's next AlterField of
the field would silently drop.

A run stops starting batches when its `budget` is spent and reports `backlog`: the rows still
due for deletion when it ended (ledger rows plus task results), a bounded count — exact up to
BACKLOG_CAP per table, and BACKLOG_CAP means "at least that many". Rows left because they were
locked or undeletable are in it too, so a backlog that never falls to 0 means a row needs a look.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import DatabaseError, IntegrityError, InternalError, connection, transaction
from django_celery_results.models import TaskResult

from scheduler import conf
from scheduler.budget import Budget
from scheduler.locks import lease_holders_forget

logger = logging.getLogger(__name__)

BATCH = 5000
BACKLOG_CAP = 100_000
LOCK_TIMEOUT = "2s"  # a batch waits no longer for a lock; then it is split like a failing one


def _ages() -> dict[str, int]:
    """Seconds to keep ledger rows, by status group (settings.SCHEDULER.retention)."""
    retention = conf.load().retention
    return {"succeeded": retention.succeeded_seconds, "failed": retention.failed_seconds}


# Due: finished, old enough for its status group (failed, lost, missed and expired runs are kept
# longer), and not the owner of a duplicate that is itself too young to go (duplicates are in the
# succeeded group). Parameters: the succeeded cutoff, the failed cutoff, the succeeded cutoff.
_RUNS_DUE = (
    "finished_at < %s AND (status NOT IN ('failed', 'lost', 'missed', 'expired') "
    "OR finished_at < %s) AND status NOT IN ('queued', 'running') "
    "AND NOT EXISTS (SELECT 1 FROM scheduler_jobrun d "
    "WHERE d.duplicate_of_id = scheduler_jobrun.id AND d.finished_at >= %s)"
)
_DUPLICATES_DUE = _RUNS_DUE + " AND duplicate_of_id IS NOT NULL"
# Only owners that no row names any more: a duplicate left behind (locked, undeletable, or a
# budget that ran out) keeps its owner, so the foreign key holds in every batch layout.
_OWNERS_DUE = (
    _RUNS_DUE + " AND NOT EXISTS (SELECT 1 FROM scheduler_jobrun r "  # noqa: S608
    "WHERE r.duplicate_of_id = scheduler_jobrun.id)"
)
# Parameters: the succeeded cutoff, the failed cutoff.
_RESULTS_DUE = "date_done < %s AND (status <> 'FAILURE' OR date_done < %s)"
_RUNS = "scheduler_jobrun"
_RESULTS = TaskResult._meta.db_table


def _row_error(exc: DatabaseError) -> bool:
    """An error one row can cause (a reference, a trigger, a lock held too long), as opposed to
    a lost connection or our own bad SQL, which splitting the batch would only repeat."""
    if isinstance(exc, IntegrityError | InternalError):
        return True
    return getattr(exc.__cause__, "sqlstate", None) == "55P03"  # lock_not_available


def _delete_ids(table: str, ids: list[int], budget: Budget) -> tuple[int, list[int]]:
    """Delete `ids` inside a savepoint; on a row error split them in halves (while the budget
    lasts: each lock wait costs LOCK_TIMEOUT). Returns the number deleted and the ids found
    undeletable."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {table} WHERE id = ANY(%s)", [ids])  # noqa: S608
            return cursor.rowcount, []
    except DatabaseError as exc:
        if not _row_error(exc):
            raise
        if len(ids) == 1:
            logger.warning("retention: %s row %s cannot be deleted: %s", table, ids[0], exc)
            return 0, ids
        if budget.spent:
            return 0, []  # still due: the backlog counts them, the next run goes on
    half = len(ids) // 2
    first, first_left = _delete_ids(table, ids[:half], budget)
    second, second_left = _delete_ids(table, ids[half:], budget)
    return first + second, first_left + second_left


def _prune(table: str, where: str, params: list[object], budget: Budget) -> tuple[int, int]:
    """Delete rows of `table` matching `where` batch by batch until none is left or the budget
    is spent. Returns (deleted, undeletable)."""
    deleted = 0
    undeletable: list[int] = []
    kept: set[int] = set()  # named by a live lease
    while not budget.spent:
        with transaction.atomic(), connection.cursor() as cursor:
            # Foreign keys are deferred to COMMIT by default, where one bad row fails the whole
            # batch with no way to tell which; checked at each statement, a savepoint can.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            cursor.execute(
                f"SELECT id FROM {table} WHERE {where} AND NOT id = ANY(%s) "  # noqa: S608
                f"LIMIT {BATCH} FOR UPDATE SKIP LOCKED",
                [*params, [*undeletable, *kept]],  # not picked again in this run
            )
            picked = [row[0] for row in cursor.fetchall()]
            if not picked:
                break
            ids = picked
            if table == _RUNS:
                held = lease_holders_forget(run_ids=picked)
                kept |= held
                ids = [pk for pk in picked if pk not in held]
            done, failed = _delete_ids(table, ids, budget) if ids else (0, [])
        deleted += done
        undeletable.extend(failed)
        if len(picked) < BATCH:
            break
    return deleted, len(undeletable)


def _count(table: str, where: str, params: list[object]) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM {table} WHERE {where} "  # noqa: S608
            f"LIMIT {BACKLOG_CAP}) due",
            params,
        )
        return cursor.fetchone()[0]


def retention_prune(*, now: datetime, budget: Budget | None = None) -> dict[str, int]:
    """Delete ledger rows and task results older than their retention age, duplicates before
    their owners; stop starting batches when `budget` is spent. Returns counts deleted, rows
    that could not be deleted, and the `backlog` still due."""
    budget = budget or Budget.unlimited()
    ages = _ages()
    kept_failed = now - timedelta(seconds=ages["failed"])
    kept_ok = now - timedelta(seconds=ages["succeeded"])
    runs_params: list[object] = [kept_ok, kept_failed, kept_ok]
    results_params: list[object] = [kept_ok, kept_failed]
    duplicates, dup_left = _prune(_RUNS, _DUPLICATES_DUE, runs_params, budget)
    owners, owners_left = _prune(_RUNS, _OWNERS_DUE, runs_params, budget)
    results, results_left = _prune(_RESULTS, _RESULTS_DUE, results_params, budget)
    return {
        "runs_deleted": duplicates + owners,
        "results_deleted": results,
        "undeletable": dup_left + owners_left + results_left,
        "backlog": _count(_RUNS, _RUNS_DUE, runs_params)
        + _count(_RESULTS, _RESULTS_DUE, results_params),
    }
