"""cleanup: expire abandoned sessions, drop board entries of voided/deleted sessions, and delete
old expired sessions that never moved money, in bounded batches.

Each batch picks at most GAMES_CLEANUP_BATCH_SIZE ids with FOR UPDATE SKIP LOCKED in a
MATERIALIZED CTE and changes them in its own transaction (~10k rows, ~0.3 s, a few MB on the
reference machine), so no statement holds locks for long and rows a player is touching right now
are skipped until the next run. An interrupted run loses at most its current batch: the next run
starts where it stopped, because each step's predicate only matches work not yet done. A run
stops starting batches after GAMES_CLEANUP_MAX_SECONDS and reports `incomplete: 1`.

Why a CTE and not `WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)`: measured here, the
planner may evaluate that subquery more than once within one statement (a batch of 10 deleted
20 rows), so the limit bounded nothing. A MATERIALIZED CTE is evaluated exactly once.
"""

from __future__ import annotations

import datetime as dt
import time

from django.db import connection, transaction

from games import conf
from games.models import GameSession, LeaderboardEntry
from games.services.boards import ENTRY_TABLE, SESSION_TABLE


def _session_referenced_elsewhere() -> str:
    """NOT EXISTS guards for every table that points at a session, except board entries.

    Board entries are set to NULL by the database (ON DELETE SET NULL). Any other reference, from
    this app or another (e.g. a referral reward), keeps the session: deleting it would fail at
    COMMIT, or lose history that money depends on.
    """
    guards = []
    for relation in GameSession._meta.related_objects:
        if relation.related_model is LeaderboardEntry or not relation.many_to_one:
            continue
        table = relation.related_model._meta.db_table
        column = relation.field.column
        guards.append(f"AND NOT EXISTS (SELECT 1 FROM {table} r WHERE r.{column} = s.id)")  # noqa: S608
    return " ".join(guards)


def _run_batches(sql: str, params: list[object], *, deadline: float, stats: dict[str, int]) -> int:
    """Run a batch statement until it changes fewer rows than a batch or time runs out."""
    total = 0
    batch_size = params[-1]
    while True:
        if time.monotonic() > deadline:
            stats["incomplete"] = 1
            return total
        started = time.monotonic()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, params)
            changed = cursor.rowcount
        stats["batches"] += 1
        stats["longest_batch_ms"] = max(
            stats["longest_batch_ms"], int((time.monotonic() - started) * 1000)
        )
        total += changed
        if changed < batch_size:  # type: ignore[operator]
            return total


def cleanup_run(*, now: dt.datetime) -> dict[str, int]:
    """Expire, prune entries, delete free expired sessions; never deletes a session with a fee.

    - `active` sessions started more than SESSION_EXPIRY_MINUTES ago that never reported a score
      become `expired`. Those that did report are the stuck-session finisher's: finishing them
      keeps the score the player earned.
    - `expired` sessions with entry_fee = 0 started more than GAMES_SESSION_RETENTION_DAYS ago are
      deleted unless a table other than the boards still points at them.
    - board entries whose session was voided, or deleted (session NULL), are removed.
    """
    settings = conf.load()
    deadline = time.monotonic() + settings.cleanup_max_seconds
    size = settings.cleanup_batch_size
    stats = {"batches": 0, "longest_batch_ms": 0, "incomplete": 0}

    expire_before = now - dt.timedelta(minutes=settings.session_expiry_minutes)
    stats["expired"] = _run_batches(
        f"""WITH batch AS MATERIALIZED (
                SELECT id FROM {SESSION_TABLE}
                WHERE status = 'active' AND last_score_at IS NULL AND started_at < %s
                LIMIT %s FOR UPDATE SKIP LOCKED)
            UPDATE {SESSION_TABLE} s SET status = 'expired' FROM batch
            WHERE s.id = batch.id AND s.status = 'active'""",  # noqa: S608
        [expire_before, size],
        deadline=deadline,
        stats=stats,
    )
    delete_before = now - dt.timedelta(days=settings.session_retention_days)
    # The outer predicate repeats the money check: the row a batch deletes is the row it locked
    # and re-checked, never one whose fee changed in between.
    stats["sessions_deleted"] = _run_batches(
        f"""WITH batch AS MATERIALIZED (
                SELECT s.id FROM {SESSION_TABLE} s
                WHERE s.status = 'expired' AND s.entry_fee = 0 AND s.started_at < %s
                {_session_referenced_elsewhere()}
                LIMIT %s FOR UPDATE SKIP LOCKED)
            DELETE FROM {SESSION_TABLE} s USING batch
            WHERE s.id = batch.id AND s.entry_fee = 0 AND s.status = 'expired'""",  # noqa: S608
        [delete_before, size],
        deadline=deadline,
        stats=stats,
    )
    # After the sessions: entries whose session was just deleted (set NULL) go in this run.
    voided = _run_batches(
        f"""WITH batch AS MATERIALIZED (
                SELECT e.id FROM {SESSION_TABLE} s
                JOIN {ENTRY_TABLE} e ON e.session_id = s.id
                WHERE s.voided_at IS NOT NULL
                LIMIT %s FOR UPDATE OF e SKIP LOCKED)
            DELETE FROM {ENTRY_TABLE} e USING batch WHERE e.id = batch.id""",  # noqa: S608
        [size],
        deadline=deadline,
        stats=stats,
    )
    orphaned = _run_batches(
        f"""WITH batch AS MATERIALIZED (
                SELECT id FROM {ENTRY_TABLE} WHERE session_id IS NULL
                LIMIT %s FOR UPDATE SKIP LOCKED)
            DELETE FROM {ENTRY_TABLE} e USING batch WHERE e.id = batch.id""",  # noqa: S608
        [size],
        deadline=deadline,
        stats=stats,
    )
    stats["entries_deleted"] = voided + orphaned
    return stats
