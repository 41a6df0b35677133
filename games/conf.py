"""The games settings group, `settings.GAMES`, parsed once by jobsite/settings.py from the
environment (a bad value stops the process naming its variable; docs/configuration.md).

This module imports no models: settings import it before the apps are loaded. `load()` reads
`django.conf.settings` at each call, so the `settings` fixture and `override_settings` apply at
once.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

# Longest a game can run before the stuck-session finisher closes it with its last score, by
# `games.models.Game` value (the `games.E001` check keeps the two in step). Kept below
# SESSION_EXPIRY_MINUTES so that a session that reported a score is finished, not expired.
DEFAULT_MAX_DURATION_MINUTES = {
    "snake": 15,
    "tetris": 25,
    "pong": 10,
    "breakout": 20,
    "space_invaders": 20,
}


@dataclass(frozen=True)
class GamesSettings:
    session_expiry_minutes: int
    # Expired sessions without money are kept this long for support questions, then deleted.
    session_retention_days: int
    max_duration_minutes: dict[str, int]  # GAMES_MAX_DURATION_<GAME>
    # Each entry fee is split: this share to the daily pool, the exact rest to the weekly one.
    daily_pool_share_percent: int
    # The most ids per cleanup batch; batches adapt below it to ~0.3 s each
    # (games.services.cleanup.BATCH_TARGET_SECONDS), a few MB.
    cleanup_batch_size: int
    notification_batch_size: int
    notification_max_attempts: int
    notification_retry_seconds: int
    notification_channel: str
    # Ids the stuck-session finisher reads per query; its job's budget ends a run.
    stuck_batch_size: int
    # Players awarded per badge-auto-unlock chunk (two statements, one transaction); the job's
    # budget is checked between chunks.
    badge_batch_size: int
    # A row a batch job failed on this often is left for staff (games.RowFailure).
    row_max_attempts: int
    live_stats_retention_hours: int


def load() -> GamesSettings:
    return settings.GAMES
