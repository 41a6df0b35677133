"""badge-auto-unlock: award every active badge whose rule a player now meets, once per player."""

from __future__ import annotations

import datetime as dt

from django.db import connection

from games.models import (
    Badge,
    BoardPeriod,
    GameSession,
    LeaderboardEntry,
    Notification,
    PlayerBadge,
    PrizePool,
)

# One statement: candidates per rule, insert the new awards (the unique (player, badge) makes a
# repeat or a concurrent run a no-op), and queue one notification per new award.
_AWARD_SQL = f"""
WITH candidates AS (
    SELECT s.player_id, b.id AS badge_id
    FROM {Badge._meta.db_table} b
    JOIN (SELECT player_id, count(*) AS played FROM {GameSession._meta.db_table}
          WHERE status = 'finished' AND voided_at IS NULL GROUP BY player_id) s
      ON s.played >= b.threshold
    WHERE b.active AND b.rule = 'games_played'
  UNION
    -- all-time board entries hold each player's valid best per game (voids rebuild them)
    SELECT e.player_id, b.id
    FROM {Badge._meta.db_table} b
    JOIN {LeaderboardEntry._meta.db_table} e
      ON e.game = b.game AND e.period = '{BoardPeriod.ALL_TIME}' AND e.score >= b.threshold
    WHERE b.active AND b.rule = 'score'
  UNION
    SELECT w.winner_id, b.id
    FROM {Badge._meta.db_table} b
    JOIN (SELECT winner_id, count(*) AS won FROM {PrizePool._meta.db_table}
          WHERE status = 'finalised' GROUP BY winner_id) w
      ON w.won >= b.threshold
    WHERE b.active AND b.rule = 'pools_won'
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


def badge_auto_unlock(*, now: dt.datetime) -> dict[str, int]:
    """Award badges whose rules players meet at `now`; returns awards per badge code and total."""
    with connection.cursor() as cursor:
        cursor.execute(_AWARD_SQL, {"now": now})
        counts = {code: count for code, count in cursor.fetchall()}
    counts["awarded"] = sum(counts.values())
    return counts
