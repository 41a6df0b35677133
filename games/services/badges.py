"""badge-auto-unlock: award every active badge whose rule a player now meets, once per player."""

from __future__ import annotations

import datetime as dt

from django.db import connection, transaction

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

# One statement per badge: its candidates, insert the new awards (the unique (player, badge)
# makes a repeat or a concurrent run a no-op), and queue one notification per new award.
_AWARD_SQL = f"""
WITH candidates AS (
    SELECT s.player_id, b.id AS badge_id
    FROM {Badge._meta.db_table} b
    JOIN (SELECT player_id, count(*) AS played FROM {GameSession._meta.db_table}
          WHERE status = 'finished' AND voided_at IS NULL GROUP BY player_id) s
      ON s.played >= b.threshold
    WHERE b.id = %(badge)s AND b.active AND b.rule = 'games_played'
  UNION
    -- all-time board entries hold each player's valid best per game (voids rebuild them)
    SELECT e.player_id, b.id
    FROM {Badge._meta.db_table} b
    JOIN {LeaderboardEntry._meta.db_table} e
      ON e.game = b.game AND e.period = '{BoardPeriod.ALL_TIME}' AND e.score >= b.threshold
    WHERE b.id = %(badge)s AND b.active AND b.rule = 'score'
  UNION
    SELECT w.winner_id, b.id
    FROM {Badge._meta.db_table} b
    JOIN (SELECT winner_id, count(*) AS won FROM {PrizePool._meta.db_table}
          WHERE status = 'finalised' GROUP BY winner_id) w
      ON w.won >= b.threshold
    WHERE b.id = %(badge)s AND b.active AND b.rule = 'pools_won'
),
awarded AS (
    INSERT INTO {PlayerBadge._meta.db_table} (player_id, badge_id, awarded_at)
    SELECT c.player_id, c.badge_id, %(now)s FROM candidates c
    WHERE NOT EXISTS (SELECT 1 FROM {PlayerBadge._meta.db_table} pb
                      WHERE pb.player_id = c.player_id AND pb.badge_id = c.badge_id)
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
SELECT b.code, count(*) FROM awarded a JOIN {Badge._meta.db_table} b ON b.id = a.badge_id
GROUP BY b.code
"""  # noqa: S608 -- table names are ours, values are parameters


def badge_auto_unlock(*, now: dt.datetime, budget: Budget | None = None) -> dict[str, int]:
    """Award active badges whose rules players meet at `now`, one badge at a time, each in its
    own transaction; returns awards per badge code and in total (`awarded`).

    A badge whose statement raises (anything) awards nothing this run and is recorded in
    `RowFailure` (`failed`); recorded badges are evaluated after the others and left for staff
    at GAMES_ROW_MAX_ATTEMPTS (`parked`). Awards are never revoked: a badge made inactive, or a
    player who no longer meets the rule (a voided session), keeps what was awarded. The run
    stops between badges when `budget` is spent; `backlog`: active badges not evaluated in this
    run, parked ones excepted (exact).
    """
    budget = budget or Budget.unlimited()
    failing = row_failures(job=JOB)
    badges = dict(Badge.objects.filter(active=True).order_by("id").values_list("id", "code"))
    healthy = [badge_id for badge_id in badges if badge_id not in failing.skip]
    turn = healthy + [badge_id for badge_id in failing.retry if badge_id in badges]
    row_failures_clear(job=JOB, row_ids=set(failing.skip) - set(badges))  # gone or inactive
    counts: dict[str, int] = {}
    done = failed = 0
    for badge_id in turn:
        if budget.spent:
            break
        done += 1
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(_AWARD_SQL, {"now": now, "badge": badge_id})
                awarded = sum(count for _code, count in cursor.fetchall())
        except RUN_INTERRUPTS:
            raise
        except Exception as exc:  # one badge's failure is that badge's, not the run's
            row_failure_record(job=JOB, row_id=badge_id, exc=exc, now=now)
            failed += 1
            continue
        if badge_id in failing.retry:
            row_failures_clear(job=JOB, row_ids=[badge_id])
        if awarded:
            counts[badges[badge_id]] = awarded
    counts["awarded"] = sum(counts.values())
    counts["failed"] = failed
    counts["parked"] = sum(1 for badge_id in failing.parked if badge_id in badges)
    counts["backlog"] = len(turn) - done
    return counts
