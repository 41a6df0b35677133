"""Games services: every write of the games domain goes through these functions.

One module per purpose; the eight job services take `now` (the run's slot, UTC) and return counts
for the run's ledger row.
"""

from games.services.badges import badge_auto_unlock
from games.services.cleanup import cleanup_run
from games.services.live_stats import live_stats_sync
from games.services.notifications import notification_enqueue, notifications_deliver
from games.services.pools import prize_pool_finalise, prize_pool_finalise_due
from games.services.predictions import PredictionError, prediction_match, prediction_place
from games.services.ranking import leaderboard_rank_all
from games.services.sessions import (
    SessionStateError,
    game_session_expire,
    game_session_finish,
    game_session_report_score,
    game_session_start,
    game_session_void,
    player_create,
)
from games.services.stuck import stuck_session_finish

__all__ = [
    "PredictionError",
    "SessionStateError",
    "badge_auto_unlock",
    "cleanup_run",
    "game_session_expire",
    "game_session_finish",
    "game_session_report_score",
    "game_session_start",
    "game_session_void",
    "leaderboard_rank_all",
    "live_stats_sync",
    "notification_enqueue",
    "notifications_deliver",
    "player_create",
    "prediction_match",
    "prediction_place",
    "prize_pool_finalise",
    "prize_pool_finalise_due",
    "stuck_session_finish",
]
