"""Reads of the games domain for the admin, the API and the jobs' callers."""

from __future__ import annotations

import datetime as dt

from django.db.models import QuerySet

from games.models import LeaderboardEntry, LiveStatsSnapshot, PrizePool
from games.periods import period_start


def board_top(
    *, game: str, period: str, now: dt.datetime, limit: int = 10
) -> QuerySet[LeaderboardEntry]:
    """The current board in rank order (computed, not the stored rank, which may be an hour old)."""
    return (
        LeaderboardEntry.objects.filter(
            game=game, period=period, period_start=period_start(period, now)
        )
        .select_related("player")
        .order_by("-score", "achieved_at", "id")[:limit]
    )


def prize_pools_open(*, game: str | None = None) -> QuerySet[PrizePool]:
    pools = PrizePool.objects.filter(status=PrizePool.Status.OPEN)
    if game is not None:
        pools = pools.filter(game=game)
    return pools.order_by("period_start", "period", "game")


def live_stats_latest() -> QuerySet[LiveStatsSnapshot]:
    """The newest snapshot of each game."""
    return LiveStatsSnapshot.objects.order_by("game", "-taken_at").distinct("game")
