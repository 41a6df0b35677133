"""live-stats-sync: one snapshot per game per minute, for the admin and the API."""

from __future__ import annotations

import datetime as dt

from django.db import connection

from games import conf
from games.models import (
    BoardPeriod,
    Game,
    GameSession,
    LeaderboardEntry,
    LiveStatsSnapshot,
    PoolPeriod,
    PrizePool,
)
from games.periods import period_start

_SNAPSHOT_SQL = f"""
INSERT INTO {LiveStatsSnapshot._meta.db_table}
    (game, taken_at, active_sessions, players_today, sessions_today, top_score_today,
     open_daily_pool, open_weekly_pool)
SELECT g.game, %(now)s,
    (SELECT count(*) FROM {GameSession._meta.db_table} s
     WHERE s.game = g.game AND s.status = 'active'),
    (SELECT count(DISTINCT s.player_id) FROM {GameSession._meta.db_table} s
     WHERE s.game = g.game AND s.started_at >= %(midnight)s AND s.started_at <= %(now)s),
    (SELECT count(*) FROM {GameSession._meta.db_table} s
     WHERE s.game = g.game AND s.started_at >= %(midnight)s AND s.started_at <= %(now)s),
    (SELECT max(e.score) FROM {LeaderboardEntry._meta.db_table} e
     WHERE e.game = g.game AND e.period = '{BoardPeriod.DAILY}' AND e.period_start = %(day)s),
    COALESCE((SELECT amount FROM {PrizePool._meta.db_table} p
              WHERE p.game = g.game AND p.period = '{PoolPeriod.DAILY}'
                AND p.period_start = %(day)s AND p.status = 'open'), 0),
    COALESCE((SELECT amount FROM {PrizePool._meta.db_table} p
              WHERE p.game = g.game AND p.period = '{PoolPeriod.WEEKLY}'
                AND p.period_start = %(week)s AND p.status = 'open'), 0)
FROM unnest(%(games)s::varchar[]) AS g(game)
ON CONFLICT (game, taken_at) DO NOTHING
"""  # noqa: S608


def live_stats_sync(*, now: dt.datetime) -> dict[str, int]:
    """Store one snapshot per game at `now` (a rerun for the same slot adds nothing) and prune
    snapshots older than GAMES_LIVE_STATS_RETENTION_HOURS."""
    day = period_start(BoardPeriod.DAILY, now)
    params = {
        "now": now,
        "day": day,
        "week": period_start(BoardPeriod.WEEKLY, now),
        "midnight": dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC),
        "games": list(Game.values),
    }
    with connection.cursor() as cursor:
        cursor.execute(_SNAPSHOT_SQL, params)
        written = cursor.rowcount
    keep_after = now - dt.timedelta(hours=conf.load().live_stats_retention_hours)
    pruned, _ = LiveStatsSnapshot.objects.filter(taken_at__lt=keep_after).delete()
    return {"snapshots": written, "pruned": pruned}
