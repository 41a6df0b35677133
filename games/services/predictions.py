"""prediction-matcher: settle predictions about closed pools, each exactly once."""

from __future__ import annotations

import datetime as dt

from django.db import connection

from games.models import Notification, Prediction, PrizePool

CORRECT_POINTS = 10

# One statement: only `pending` rows change, so a rerun or a concurrent run (which waits on the
# row locks and then re-checks `pending`) settles nothing twice.
_SETTLE_SQL = f"""
WITH settled AS (
    UPDATE {Prediction._meta.db_table} p
    SET outcome = CASE WHEN pool.status = 'no_winner' THEN 'void'
                       WHEN p.predicted_winner_id = pool.winner_id THEN 'correct'
                       ELSE 'wrong' END,
        points = CASE WHEN pool.status = 'finalised' AND p.predicted_winner_id = pool.winner_id
                      THEN %(points)s ELSE 0 END,
        settled_at = %(now)s
    FROM {PrizePool._meta.db_table} pool
    WHERE p.pool_id = pool.id AND p.outcome = 'pending' AND pool.status <> 'open'
    RETURNING p.id, p.player_id, p.outcome
),
notified AS (
    INSERT INTO {Notification._meta.db_table}
        (player_id, kind, title, body, dedupe_key, status, due_at, next_attempt_at, attempts,
         last_error, delivered_at, created_at)
    SELECT player_id, 'prediction', 'Your prediction was right!',
           'You earned ' || %(points)s || ' points.', 'prediction:' || id, 'pending',
           %(now)s, %(now)s, 0, '', NULL, %(now)s
    FROM settled WHERE outcome = 'correct'
    ON CONFLICT DO NOTHING
)
SELECT outcome, count(*) FROM settled GROUP BY outcome
"""  # noqa: S608


def prediction_match(*, now: dt.datetime) -> dict[str, int]:
    """Settle pending predictions of finalised/no-winner pools; counts per outcome."""
    with connection.cursor() as cursor:
        cursor.execute(_SETTLE_SQL, {"now": now, "points": CORRECT_POINTS})
        counts = {outcome: count for outcome, count in cursor.fetchall()}
    for outcome in ("correct", "wrong", "void"):
        counts.setdefault(outcome, 0)
    return counts
