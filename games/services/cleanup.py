"""cleanup: expire abandoned sessions, drop board entries of voided/deleted sessions, and delete
old expired sessions that never moved money, in bounded batches.

Each batch picks at most n ids with FOR UPDATE SKIP LOCKED in a MATERIALIZED CTE and changes
them in its own transaction, so no statement holds locks for long and rows a player is touching
right now are skipped until the next run. n adapts to the time batches take (about
BATCH_TARGET_SECONDS each, at most GAMES_CLEANUP_BATCH_SIZE rows; `_next_batch_size`). An
interrupted run loses at most its current batch: the next run starts where it stopped, because
each step's predicate only matches work not yet done. A run stops starting batches when its
budget (the job's `budget`, scheduler.budget) is spent and reports `incomplete: 1`; `backlog`
counts what is left (bounded, see `cleanup_backlog`).

Why a CTE and not `WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)`: measured here, the
planner may evaluate that subquery more than once within one statement (a batch of 10 deleted
20 rows), so the limit bounded nothing. A MATERIALIZED CTE is evaluated exactly once.
Why keyset order: see `_run_batches`.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

from django.db import connection, transaction
from django.db.models import Q, QuerySet

from games import conf
from games.models import Game, GameSession, LeaderboardEntry, PrizePool
from games.services.boards import (
    ENTRY_TABLE,
    SESSION_TABLE,
    boards_mark_changed,
    boards_rank,
    current_board_keys,
)
from games.services.failures import row_failure_record, row_failures, row_failures_clear
from games.services.sessions import game_session_expire
from scheduler.budget import Budget
from scheduler.errors import RUN_INTERRUPTS

JOB = "cleanup"
# `backlog` counts at most this many rows per step: enough to tell "a few" from "a lot" in
# a handful of index probes, never a count over a table of millions.
BACKLOG_CAP = 10_000


def _session_referenced_elsewhere() -> str:
    """NOT EXISTS guards for every table that points at a session, except board entries.

    Board entries are set to NULL by the database (ON DELETE SET NULL). Any other reference, from
    this app or another (e.g. a referral reward), keeps the session: deleting it would fail at
    COMMIT, or lose history that money depends on.

    `include_hidden=True`: `_meta.related_objects` omits relations declared with a related_name
    ending in "+" (referrals.ReferralReward.session is one), which would leave them unguarded.
    Every reverse relation whose foreign key has a column (many-to-one or one-to-one, including
    the through tables of many-to-many fields) is guarded.
    """
    guards = []
    for relation in GameSession._meta.get_fields(include_hidden=True):
        if not relation.auto_created or relation.concrete:
            continue  # not a reverse relation
        if relation.related_model is LeaderboardEntry:
            continue
        if not (relation.one_to_many or relation.one_to_one):
            continue  # many-to-many: its through table's foreign key is a relation of its own
        table = relation.related_model._meta.db_table
        column = relation.field.column
        guards.append(f"AND NOT EXISTS (SELECT 1 FROM {table} r WHERE r.{column} = s.id)")  # noqa: S608
    return " ".join(guards)


# Entry deletes here skip the delete trigger's per-board marks (thousands of finished boards per
# batch) except on boards whose pool is still open (finalisation ranks those only if marked);
# cleanup marks the current boards once at the end.
SKIP_BOARD_MARKS = "SET LOCAL games.skip_board_marks = 'on'"

POOL_TABLE = PrizePool._meta.db_table

# Keyset start: before any real row.
_FIRST_KEY = (dt.datetime(1, 1, 1, tzinfo=dt.UTC), 0)

# What a batch (its statement and its COMMIT) aims to take. Locks must not be held for more than
# about a second; a fixed 10k-row batch of session deletes took 0.5-0.7 s on the reference
# machine and its longest 1.0-1.2 s when other work loaded it (bench, 1M sessions). Aiming at
# 0.3 s leaves room for a batch 3x slower than the one before it. Each step starts small and
# doubles while batches are fast, so its first batch is never a blind full-size one.
BATCH_TARGET_SECONDS = 0.3
FIRST_BATCH_SIZE = 1_000


def _next_batch_size(size: int, seconds: float, *, cap: int) -> int:
    """The size of the batch after one of `size` rows that took `seconds`.

    Proportional to the time left to the target, shrinking at once when a batch was slow and
    growing at most 2x per batch (one fast batch, e.g. rows already gone, is no evidence that
    a much larger one will be fast); between 1 and `cap`.
    """
    scaled = size * BATCH_TARGET_SECONDS / seconds if seconds > 0 else cap
    return max(1, min(cap, 2 * size, int(scaled)))


def _run_batches(
    sql: str,
    params: dict[str, object],
    *,
    size: int,
    budget: Budget,
    stats: dict[str, int],
    prelude: str = "",
    then: Callable[..., None] | None = None,
) -> int:
    """Run a batch statement until a batch picks fewer rows than it asked for, or time runs out.

    The statement picks rows after the keyset (`after_at`, `after_id`) in key order, changes them
    and returns (rows changed, rows picked, last key, *more); `then(*more)` runs next in the
    batch's transaction. Batches start at FIRST_BATCH_SIZE and follow `_next_batch_size`, up to
    `size`. Walking forward by key, instead of asking
    again for "the first n rows that match", means no batch re-reads the dead index entries of
    the rows earlier batches deleted (measured: 1M deletions went from 3.6 s to well under a
    second for the longest batch, total time ~3x lower).
    """
    total = 0
    after_at, after_id = _FIRST_KEY
    n = min(size, FIRST_BATCH_SIZE)
    while True:
        if budget.spent:
            stats["incomplete"] = 1
            return total
        started = time.monotonic()
        with transaction.atomic(), connection.cursor() as cursor:
            if prelude:
                cursor.execute(prelude)
            cursor.execute(sql, {**params, "after_at": after_at, "after_id": after_id, "n": n})
            changed, picked, last_at, last_id, *more = cursor.fetchone()
            if then is not None:
                then(*more)
        seconds = time.monotonic() - started
        stats["batches"] += 1
        stats["longest_batch_ms"] = max(stats["longest_batch_ms"], int(seconds * 1000))
        total += changed
        if picked < n:
            return total
        after_at, after_id = last_at or after_at, last_id
        n = _next_batch_size(n, seconds, cap=size)


def _abandoned_paid(before: dt.datetime) -> QuerySet[GameSession]:
    return GameSession.objects.filter(
        status=GameSession.Status.ACTIVE,
        started_at__lt=before,
        last_score_at__isnull=True,
        entry_fee__gt=0,
    ).order_by("started_at", "id")


def _expire_paid(
    *, before: dt.datetime, now: dt.datetime, size: int, budget: Budget, stats: dict[str, int]
) -> int:
    """Expire abandoned paid sessions one by one through `game_session_expire` (its own
    transaction each: status and pool shares together); returns how many it expired.

    Reads at most `size` ids at a time in keyset order; the service re-checks each under its row
    lock, so a session finished or scored meanwhile is left alone. A session that raises is
    rolled back alone and recorded in `RowFailure` (`expire_failed`); recorded sessions are
    tried after the others, and left for staff at GAMES_ROW_MAX_ATTEMPTS (`expire_parked`).
    """
    expired = 0
    stats["expire_failed"] = 0
    failing = row_failures(job=JOB)
    stats["expire_parked"] = len(failing.parked)  # (exact below, once the records are checked)

    def expire(session_id: int) -> bool:
        nonlocal expired
        try:
            expired += int(game_session_expire(session_id=session_id, now=now))
        except RUN_INTERRUPTS:
            raise
        except Exception as exc:  # one session's failure is that session's, not the run's
            row_failure_record(job=JOB, row_id=session_id, exc=exc, now=now)
            stats["expire_failed"] += 1
            return False
        return True

    abandoned = _abandoned_paid(before)
    after = _FIRST_KEY
    while True:
        keys = list(
            abandoned.exclude(pk__in=failing.skip)
            .filter(Q(started_at__gt=after[0]) | Q(started_at=after[0], id__gt=after[1]))
            .values_list("started_at", "id")[:size]
        )
        for started_at, session_id in keys:
            if budget.spent:
                stats["incomplete"] = 1
                return expired
            expire(session_id)
            after = (started_at, session_id)
        if len(keys) < size:
            break
    # Then the ones that failed before; a record whose session needs no expiry any more goes.
    still = set(abandoned.filter(pk__in=failing.skip).values_list("id", flat=True))
    row_failures_clear(job=JOB, row_ids=set(failing.skip) - still)
    for session_id in failing.retry:
        if budget.spent:
            stats["incomplete"] = 1
            break
        if session_id in still and expire(session_id):
            row_failures_clear(job=JOB, row_ids=[session_id])
    stats["expire_parked"] = len(still.intersection(failing.parked))
    return expired


def cleanup_backlog(*, now: dt.datetime) -> int:
    """Rows cleanup would still act on at `now`: abandoned sessions to expire (except parked
    ones), old expired free sessions (counting those a reference keeps: an upper bound), board
    entries of voided or deleted sessions. At most BACKLOG_CAP per step, so a few index probes."""
    settings = conf.load()
    expiry_before = now - dt.timedelta(minutes=settings.session_expiry_minutes)
    steps: list[QuerySet] = [
        GameSession.objects.filter(
            status=GameSession.Status.ACTIVE, started_at__lt=expiry_before, last_score_at=None
        ).exclude(pk__in=row_failures(job=JOB).parked),
        GameSession.objects.filter(
            status=GameSession.Status.EXPIRED,
            entry_fee=0,
            started_at__lt=now - dt.timedelta(days=settings.session_retention_days),
        ),
        LeaderboardEntry.objects.filter(session__voided_at__isnull=False),
        LeaderboardEntry.objects.filter(session__isnull=True),
    ]
    return sum(step.order_by().values("id")[:BACKLOG_CAP].count() for step in steps)


def _batch_sql(pick: str, change: str, *, between: str = "", more: str = "") -> str:
    """`pick` selects (key_at, id) of at most %(n)s rows in key order, locking them;
    `change` changes the rows joined as `batch` and returns one row per change; `between` adds
    CTEs after `batch`, `more` columns after the four the batch loop reads."""
    sql = f"""
        WITH batch AS MATERIALIZED ({pick}),
        {between}
        changed AS ({change}),
        last AS (SELECT key_at, id FROM batch ORDER BY key_at DESC, id DESC LIMIT 1)
        SELECT (SELECT count(*) FROM changed), (SELECT count(*) FROM batch),
               (SELECT key_at FROM last), (SELECT id FROM last) {more}
    """  # noqa: S608 -- both parts are built from our table names
    return sql


# Entry deletion holds the pool row of each board it deletes from, the lock finalisation and every
# other writer of a board with a pool take first: a board is never changed while its pool is
# being finalised (a deletion between finalisation's "unchanged?" check and its commit would
# leave a gap in the final ranks). The entry rows are picked first (SKIP LOCKED), so the pool
# rows are taken with SKIP LOCKED too (waiting for them while holding entries could deadlock with
# a finaliser that holds the pool and writes ranks): the entries of a board whose pool is busy
# are left for the next run. Boards without a pool (all-time, free play only) need no lock.
# Then: an open pool's board is marked by the delete trigger (migration 0006) and ranked by the
# next ranking or by finalisation; a closed pool's board is final, and is re-ranked in the same
# transaction so its final ranks run 1..N again (as a void does, `_final_board_entry_drop`).
_ENTRY_DELETE_POOLS = f"""
        boards AS MATERIALIZED (
            SELECT DISTINCT e.game, e.period, e.period_start
            FROM {ENTRY_TABLE} e JOIN batch ON batch.id = e.id),
        held AS MATERIALIZED (
            SELECT p.game, p.period, p.period_start, p.status
            FROM {POOL_TABLE} p JOIN boards b
              ON p.game = b.game AND p.period = b.period AND p.period_start = b.period_start
            FOR UPDATE OF p SKIP LOCKED),
"""  # noqa: S608
_ENTRY_DELETE = f"""
        DELETE FROM {ENTRY_TABLE} e USING batch WHERE e.id = batch.id
          AND (NOT EXISTS (SELECT 1 FROM {POOL_TABLE} p WHERE p.game = e.game
                           AND p.period = e.period AND p.period_start = e.period_start)
               OR EXISTS (SELECT 1 FROM held h WHERE h.game = e.game
                          AND h.period = e.period AND h.period_start = e.period_start))
        RETURNING e.game, e.period, e.period_start
"""  # noqa: S608
_ENTRY_DELETE_MORE = """,
        (SELECT count(*) FROM batch) - (SELECT count(*) FROM changed),
        (SELECT json_agg(json_build_array(d.game, d.period, d.period_start))
         FROM (SELECT DISTINCT c.game, c.period, c.period_start FROM changed c
               JOIN held h ON h.game = c.game AND h.period = c.period
                          AND h.period_start = c.period_start
               WHERE h.status <> 'open') d)
"""


def cleanup_run(*, now: dt.datetime, budget: Budget | None = None) -> dict[str, int]:
    """Expire, delete free expired sessions, prune entries; never deletes a session with a fee.

    - `active` sessions started more than SESSION_EXPIRY_MINUTES ago that never reported a score
      become `expired`. Those that did report are the stuck-session finisher's: finishing them
      keeps the score the player earned. Free ones are expired in batches; paid ones one by one
      through `game_session_expire`, whose rule is that the entry fee still goes into the pools
      open at `now`, as at a finish, in the transaction that expires the session (so once).
    - `expired` sessions with entry_fee = 0 started more than GAMES_SESSION_RETENTION_DAYS ago are
      deleted unless a table other than the boards still points at them.
    - board entries whose session was voided, or deleted (session NULL), are removed, holding
      the pool row of their board if it has one (never while the pool is being finalised: such
      entries wait for the next run, counted in `entries_pool_busy`); a final board (closed
      pool) that lost entries is re-ranked in the same transaction (`final_boards_reranked`).

    A paid session whose expiry raises (anything) is recorded, not fatal (`_expire_paid`). The
    run stops starting batches or sessions when `budget` is spent (`incomplete: 1`); `backlog`
    is `cleanup_backlog` at the end of the run.
    """
    settings = conf.load()
    budget = budget or Budget.unlimited()
    size = settings.cleanup_batch_size
    stats = {"batches": 0, "longest_batch_ms": 0, "incomplete": 0}

    def run(
        sql: str, prelude: str = "", then: Callable[..., None] | None = None, **params: object
    ) -> int:
        return _run_batches(
            sql, params, size=size, budget=budget, stats=stats, prelude=prelude, then=then
        )

    stats["entries_pool_busy"] = 0
    stats["final_boards_reranked"] = 0

    def after_entry_delete(busy: int, final_boards: list[list[str]] | None) -> None:
        """Entries left because their pool was busy; final boards re-ranked (pools held)."""
        stats["entries_pool_busy"] += busy
        boards = [
            (game, period, dt.date.fromisoformat(start))
            for game, period, start in final_boards or []
        ]
        boards_rank(boards)
        stats["final_boards_reranked"] += len(boards)

    expiry_before = now - dt.timedelta(minutes=settings.session_expiry_minutes)
    # Free sessions move no money: a set-based batch. Paid ones go through the service below.
    expired_free = run(
        _batch_sql(
            f"""SELECT started_at AS key_at, id FROM {SESSION_TABLE}
                WHERE status = 'active' AND started_at < %(before)s
                  AND (started_at, id) > (%(after_at)s, %(after_id)s)
                  AND last_score_at IS NULL AND entry_fee = 0
                ORDER BY started_at, id LIMIT %(n)s FOR UPDATE SKIP LOCKED""",  # noqa: S608
            f"""UPDATE {SESSION_TABLE} s SET status = 'expired' FROM batch
                WHERE s.id = batch.id AND s.status = 'active' AND s.entry_fee = 0
                RETURNING 1""",  # noqa: S608
        ),
        before=expiry_before,
    )
    stats["expired_paid"] = _expire_paid(
        before=expiry_before, now=now, size=size, budget=budget, stats=stats
    )
    stats["expired"] = expired_free + stats["expired_paid"]
    # The DELETE repeats the money check: the row it deletes is the row it locked and
    # re-checked, never one whose fee changed in between.
    stats["sessions_deleted"] = run(
        _batch_sql(
            f"""SELECT s.started_at AS key_at, s.id FROM {SESSION_TABLE} s
                WHERE s.status = 'expired' AND s.entry_fee = 0 AND s.started_at < %(before)s
                  AND (s.started_at, s.id) > (%(after_at)s, %(after_id)s)
                  {_session_referenced_elsewhere()}
                ORDER BY s.started_at, s.id LIMIT %(n)s FOR UPDATE SKIP LOCKED""",  # noqa: S608
            f"""DELETE FROM {SESSION_TABLE} s USING batch
                WHERE s.id = batch.id AND s.entry_fee = 0 AND s.status = 'expired'
                RETURNING 1""",  # noqa: S608
        ),
        before=now - dt.timedelta(days=settings.session_retention_days),
    )
    # After the sessions: entries whose session was just deleted (set NULL) go in this run.
    voided = run(
        _batch_sql(
            f"""SELECT %(after_at)s::timestamptz AS key_at, e.id FROM {SESSION_TABLE} s
                JOIN {ENTRY_TABLE} e ON e.session_id = s.id
                WHERE s.voided_at IS NOT NULL AND e.id > %(after_id)s
                ORDER BY e.id LIMIT %(n)s FOR UPDATE OF e SKIP LOCKED""",  # noqa: S608
            _ENTRY_DELETE,
            between=_ENTRY_DELETE_POOLS,
            more=_ENTRY_DELETE_MORE,
        ),
        prelude=SKIP_BOARD_MARKS,
        then=after_entry_delete,
    )
    orphaned = run(
        _batch_sql(
            f"""SELECT %(after_at)s::timestamptz AS key_at, id FROM {ENTRY_TABLE}
                WHERE session_id IS NULL AND id > %(after_id)s
                ORDER BY id LIMIT %(n)s FOR UPDATE SKIP LOCKED""",  # noqa: S608
            _ENTRY_DELETE,
            between=_ENTRY_DELETE_POOLS,
            more=_ENTRY_DELETE_MORE,
        ),
        prelude=SKIP_BOARD_MARKS,
        then=after_entry_delete,
    )
    stats["entries_deleted"] = voided + orphaned
    if stats["entries_deleted"]:
        # The deletes above marked only boards with an open pool (migrations 0005, 0006): mark
        # the current boards once (the all-time ones have no pool), so the next ranking run
        # closes any gap (it rewrites only ranks that change).
        boards_mark_changed(current_board_keys(now, Game.values))
    stats["backlog"] = cleanup_backlog(now=now)
    return stats
