"""Rows the referral jobs could not process (`FailedItem`): record, retry behind healthy work, hold.

One owner for "one bad row never stops a job" in referrals. A job works through a batch with one
set-based statement; when that statement fails, it goes through the batch again with one
savepoint per row (or per player's settlement), and a row that raises anything is recorded here
while the rest commits. Recorded rows are left out of the normal pass (so a poisoned row is never
first in line again), retried once due, after the healthy work, and held for staff from
REFERRAL_ITEM_MAX_ATTEMPTS on. What is not a row's fault is re-raised instead: the run is out of
time, or the connection's transaction is broken (then no savepoint can save the batch).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from django.db import connection, transaction
from django.db.models import QuerySet

from referrals import conf
from referrals.models import FailedItem
from scheduler.errors import RUN_INTERRUPTS, error_text

_TABLE = FailedItem._meta.db_table

# A set-aside row waits REFERRAL_ITEM_RETRY_SECONDS x 2**(attempts - 1), at most a day.
RETRY_CAP_SECONDS = 24 * 3600

# One statement per source column: ON CONFLICT needs the unique index of that column.
# The wait after attempt n (1 on insert, the stored count + 1 on conflict) is
# `core.backoff.backoff(n, base=REFERRAL_ITEM_RETRY_SECONDS, cap=RETRY_CAP_SECONDS)`, written out
# in SQL term for term because each row's count is read and bumped inside this statement;
# tests/referrals/test_rewards.py checks the two agree.
_RECORD = """
INSERT INTO {table} (job, {column}, attempts, error, first_failed_at, last_failed_at,
                     next_attempt_at)
SELECT %(job)s, item, 1, %(error)s, %(now)s, %(now)s,
       %(now)s + make_interval(secs => LEAST(%(cap)s, %(base)s))
FROM unnest(%(ids)s::bigint[]) AS item
ON CONFLICT ({column}, job) DO UPDATE SET
    attempts = {table}.attempts + 1,
    error = EXCLUDED.error,
    last_failed_at = EXCLUDED.last_failed_at,
    next_attempt_at = %(now)s + make_interval(secs => LEAST(%(cap)s,
        %(base)s * power(2, LEAST({table}.attempts, 60))))
"""


def raise_unless_row_fault(exc: BaseException) -> None:
    """Re-raise `exc` when no row is to blame: what ends a run (`scheduler.errors.RUN_INTERRUPTS`:
    Celery's soft time limit, a lost lease), or a transaction that a savepoint could not roll
    back (a lost connection; the job's retry policy takes over). Call it first in every `except`
    that records a row's failure."""
    if isinstance(exc, RUN_INTERRUPTS) or connection.needs_rollback:
        raise exc


def checks_per_statement() -> None:
    """In a batch transaction: check foreign keys at each statement instead of at COMMIT, so a
    bad row fails inside its own savepoint, where it can be recorded, instead of failing the
    whole batch when it commits."""
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")


def failed_items_record(
    *,
    job: str,
    exc: BaseException,
    now: dt.datetime,
    rewards: Sequence[int] = (),
    credits: Sequence[int] = (),
) -> None:
    """Count one failed attempt of `job` on these rewards / prize credits, with the cleaned error.

    Call it after the rows' own savepoint was rolled back; it writes in a savepoint of its own."""
    params = {
        "job": job,
        "error": error_text(exc),
        "now": now,
        "base": conf.load().item_retry_seconds,
        "cap": RETRY_CAP_SECONDS,
    }
    with transaction.atomic(), connection.cursor() as cursor:
        for column, ids in (("reward_id", rewards), ("prize_credit_id", credits)):
            if ids:
                cursor.execute(
                    _RECORD.format(table=_TABLE, column=column), {**params, "ids": list(ids)}
                )


def failed_items_due(*, job: str, now: dt.datetime) -> QuerySet[FailedItem]:
    """`job`'s recorded rows to retry now: below the attempt limit and past their backoff, the
    longest-waiting first."""
    return FailedItem.objects.filter(
        job=job, attempts__lt=conf.load().item_max_attempts, next_attempt_at__lte=now
    ).order_by("next_attempt_at", "id")


def failed_items_clear(
    *, job: str, rewards: Sequence[int] = (), credits: Sequence[int] = ()
) -> int:
    """Forget `job`'s failures of these rows: they were processed."""
    deleted = 0
    if rewards:
        deleted += FailedItem.objects.filter(job=job, reward_id__in=rewards).delete()[0]
    if credits:
        deleted += FailedItem.objects.filter(job=job, prize_credit_id__in=credits).delete()[0]
    return deleted


def failed_items_retry(*, ids: Sequence[int], now: dt.datetime) -> int:
    """Staff: give these (held) rows a fresh set of attempts from the next run on; the last error
    stays on the row until the next attempt. Returns how many rows were released."""
    return FailedItem.objects.filter(pk__in=ids).update(attempts=0, next_attempt_at=now)
