"""Games settings from the environment; a bad value is an error that names its variable.

Read through `load()` at each use, so a test's `monkeypatch.setenv` applies at once, and once at
startup by the system check in `games.checks`, so a typo stops `manage.py check` and every process.
"""

from __future__ import annotations

from dataclasses import dataclass

from games.models import Game
from jobsite.env import env_int, env_str

# Longest a game can run before the stuck-session finisher closes it with its last score. Kept
# below SESSION_EXPIRY_MINUTES so that a session that reported a score is finished, not expired.
DEFAULT_MAX_DURATION_MINUTES = {
    Game.SNAKE: 15,
    Game.TETRIS: 25,
    Game.PONG: 10,
    Game.BREAKOUT: 20,
    Game.SPACE_INVADERS: 20,
}


@dataclass(frozen=True)
class GamesSettings:
    session_expiry_minutes: int
    session_retention_days: int
    max_duration_minutes: dict[str, int]
    daily_pool_share_percent: int
    cleanup_batch_size: int
    notification_batch_size: int
    notification_max_attempts: int
    notification_retry_seconds: int
    notification_channel: str
    stuck_batch_size: int
    badge_batch_size: int
    row_max_attempts: int
    live_stats_retention_hours: int


def load() -> GamesSettings:
    expiry = env_int("SESSION_EXPIRY_MINUTES", 30, minimum=1, maximum=7 * 24 * 60)
    return GamesSettings(
        session_expiry_minutes=expiry,
        # Expired sessions without money are kept this long for support questions, then deleted.
        session_retention_days=env_int("GAMES_SESSION_RETENTION_DAYS", 30, minimum=1),
        max_duration_minutes={
            game: env_int(f"GAMES_MAX_DURATION_{game.upper()}", default, minimum=1)
            for game, default in DEFAULT_MAX_DURATION_MINUTES.items()
        },
        # Each entry fee is split: this share to the daily pool, the exact rest to the weekly one.
        daily_pool_share_percent=env_int("GAMES_DAILY_POOL_SHARE", 50, minimum=0, maximum=100),
        # The most ids per cleanup batch; batches adapt below it to ~0.3 s each
        # (games.services.cleanup.BATCH_TARGET_SECONDS), a few MB.
        cleanup_batch_size=env_int("GAMES_CLEANUP_BATCH_SIZE", 10_000, minimum=1, maximum=100_000),
        notification_batch_size=env_int("GAMES_NOTIFICATION_BATCH_SIZE", 200, minimum=1),
        notification_max_attempts=env_int("GAMES_NOTIFICATION_MAX_ATTEMPTS", 8, minimum=1),
        notification_retry_seconds=env_int("GAMES_NOTIFICATION_RETRY_SECONDS", 60, minimum=1),
        notification_channel=env_str(
            "GAMES_NOTIFICATION_CHANNEL", "games.services.notifications.InboxChannel"
        ),
        # Ids the stuck-session finisher reads per query; its job's budget ends a run.
        stuck_batch_size=env_int("GAMES_STUCK_BATCH_SIZE", 500, minimum=1),
        # Players awarded per badge-auto-unlock chunk (two statements, one transaction); the
        # job's budget is checked between chunks. 5,000: ~0.3 s per chunk at 100,000 awards.
        badge_batch_size=env_int("GAMES_BADGE_BATCH_SIZE", 5_000, minimum=1, maximum=100_000),
        # A row a batch job failed on this often is left for staff (games.RowFailure).
        row_max_attempts=env_int("GAMES_ROW_MAX_ATTEMPTS", 5, minimum=1),
        live_stats_retention_hours=env_int("GAMES_LIVE_STATS_RETENTION_HOURS", 48, minimum=1),
    )
