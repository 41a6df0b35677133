"""badge-auto-unlock: award every active badge whose rule a player now meets, once per player."""

from __future__ import annotations

import datetime as dt

from django.db import connection, transaction

from games import conf
from games.models import (
    Badge,
    BoardPeriod,
    GameSession,
    LeaderboardEntry,
    Notification,
    PlayerBadge,
    PrizePool,
)
from games.services.failures import row_failure_record, row_failures, row_failures_clear
from scheduler.budget import Budget
from scheduler.errors import RUN_INTERRUPTS

JOB = "badge-auto-unlock"

# A badge is awarded in chunks of at most GAMES_BADGE_BATCH_SIZE players, in player-id order,
# each chunk two statements in one transaction:
#
# 1. `_DUE_SQL` reads the next chunk: players after the last one seen who meet the badge's rule
#    and do not hold it yet. It is a plain read, so the anti join never meets rows inserted by
#    the statement itself. (In one statement with the INSERT it did: with no award analysed yet
#    the planner picks a nested-loop anti join over games_playerbadge that scans every award the
#    statement has just inserted, once per candidate; quadratic, 139 s for 100,000 awards.)
# 2. `_AWARD_SQL` inserts those awards (the unique (player, badge) makes a repeat or a
#    concurrent run a no-op) and queues one notification per new award.
#
# Each chunk's statements are bounded by the chunk, so a run checks its budget every few hundred
# milliseconds whatever the backlog, and the next run goes on where it stopped (the anti join
# skips what was awarded).
_DUE_SQL = f"""
WITH candidates AS (
    SELECT s.player_id
    FROM {Badge._meta.db_table} b
    JOIN (SELECT player_id, count(*) AS played FROM {GameSession._meta.db_table}
          WHERE status = 'finished' AND voided_at IS NULL AND player_id > %(after)s
          GROUP BY player_id) s
      ON s.played >= b.threshold
    WHERE b.id = %(badge)s AND b.active AND b.rule = 'games_played'
  UNION ALL
    -- all-time board entries hold each player's valid best per game (voids rebuild them)
    SELECT e.player_id
    FROM {Badge._meta.db_table} b
    JOIN {LeaderboardEntry._meta.db_table} e
      ON e.game = b.game AND e.period = '{BoardPeriod.ALL_TIME}' AND e.score >= b.threshold
    WHERE b.id = %(badge)s AND b.active AND b.rule = 'score' AND e.player_id > %(after)s
  UNION ALL
    SELECT w.winner_id
    FROM {Badge._meta.db_table} b
    JOIN (SELECT winner_id, count(*) AS won FROM {PrizePool._meta.db_table}
          WHERE status = 'finalised' AND winner_id > %(after)s GROUP BY winner_id) w
      ON w.won >= b.threshold
    WHERE b.id = %(badge)s AND b.active AND b.rule = 'pools_won'
)
SELECT DISTINCT c.player_id FROM candidates c
WHERE NOT EXISTS (SELECT 1 FROM {PlayerBadge._meta.db_table} pb
                  WHERE pb.player_id = c.player_id AND pb.badge_id = %(badge)s)
ORDER BY c.player_id
LIMIT %(size)s
"""  # noqa: S608 -- table names are ours, values are parameters

_AWARD_SQL = f"""
WITH awarded AS (
    INSERT INTO {PlayerBadge._meta.db_table} (player_id, badge_id, awarded_at)
    SELECT player_id, %(badge)s, %(now)s FROM unnest(%(players)s::bigint[]) AS p(player_id)
    ON CONFLICT (player_id, badge_id) DO NOTHING
    RETURNING player_id, badge_id
),
notified AS (
    INSERT INTO {Notification._meta.db_table}
        (player_id, kind, title, body, dedupe_key, status, due_at, next_attempt_at, attempts,
         last_error, delivered_at, created_at)
    SELECT a.player_id, 'badge', 'Badge unlocked: ' || b.name, b.description,
           'badge:' || b.id || ':' || a.player_id, 'pending', %(now)s, %(now)s, 0, '', NULL,
           %(now)s
    FROM awarded a JOIN {Badge._meta.db_table} b ON b.id = a.badge_id
    ON CONFLICT DO NOTHING
)
SELECT count(*) FROM awarded
"""  # noqa: S608 -- table names are ours, values are parameters


def _badge_award(
    *, badge_id: int, now: dt.datetime, budget: Budget, size: int, awarded: list[int]
) -> bool:
    """Award `badge_id` chunk by chunk, each chunk in its own transaction, until no player is
    due (True) or `budget` is spent between chunks (False: the rest is left for the next run).
    The first chunk always runs, so a run that starts a badge makes progress on it. Each
    chunk's new awards are appended to `awarded` as soon as they commit."""
    after = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_DUE_SQL, {"badge": badge_id, "after": after, "size": size})
            players = [player_id for (player_id,) in cursor.fetchall()]
            if players:
                cursor.execute(_AWARD_SQL, {"badge": badge_id, "now": now, "players": players})
                new = cursor.fetchone()[0]
        if players:
            awarded.append(new)
        if len(players) < size:
            return True
        after = players[-1]
        if budget.spent:
            return False


def badge_auto_unlock(*, now: dt.datetime, budget: Budget | None = None) -> dict[str, int]:
    """Award active badges whose rules players meet at `now`, one badge at a time, in chunks
    of at most GAMES_BADGE_BATCH_SIZE players, each chunk in its own transaction; returns
    awards per badge code and in total (`awarded`).

    A badge whose chunk raises (anything) keeps the awards of its earlier chunks, awards
    nothing more this run and is recorded in `RowFailure` (`failed`); recorded badges are
    evaluated after the others and left for staff at GAMES_ROW_MAX_ATTEMPTS (`parked`). Awards
    are never revoked: a badge made inactive, or a player who no longer meets the rule (a
    voided session), keeps what was awarded. The run checks `budget` between badges and
    between chunks and stops when it is spent; a badge it has started always gets at least
    one chunk, so any backlog progresses. `backlog`: active badges whose evaluation this run
    did not finish (not started, or stopped between chunks), parked ones excepted (exact).
    """
    budget = budget or Budget.unlimited()
    size = conf.load().badge_batch_size
    failing = row_failures(job=JOB)
    badges = dict(Badge.objects.filter(active=True).order_by("id").values_list("id", "code"))
    healthy = [badge_id for badge_id in badges if badge_id not in failing.skip]
    turn = healthy + [badge_id for badge_id in failing.retry if badge_id in badges]
    row_failures_clear(job=JOB, row_ids=set(failing.skip) - set(badges))  # gone or inactive
    counts: dict[str, int] = {}
    finished = failed = 0
    for badge_id in turn:
        if budget.spent:
            break
        awarded: list[int] = []
        try:
            done = _badge_award(
                badge_id=badge_id, now=now, budget=budget, size=size, awarded=awarded
            )
        except RUN_INTERRUPTS:
            raise
        except Exception as exc:  # one badge's failure is that badge's, not the run's
            row_failure_record(job=JOB, row_id=badge_id, exc=exc, now=now)
            failed += 1
            done = True  # evaluated (and failed): not backlog, the record brings it back
        else:
            if done and badge_id in failing.retry:
                row_failures_clear(job=JOB, row_ids=[badge_id])
        if sum(awarded):
            counts[badges[badge_id]] = sum(awarded)
        finished += done
        if not done:
            break
    counts["awarded"] = sum(counts.values())
    counts["failed"] = failed
    counts["parked"] = sum(1 for badge_id in failing.parked if badge_id in badges)
    counts["backlog"] = len(turn) - finished
    return counts
