"""The games app's scheduled jobs: one table, read by the scheduler (names, crons and offsets
from DESIGN.md "Default jobs"; offsets keep every job in its own second all day).

Task names are explicit and never derived from module paths, so a message queued before a deploy
still finds its task after a refactor. Database hiccups (a dropped connection, a failover) are
retried with backoff; any other error is a bug and fails the run. Every service is idempotent
for its slot, so a retry or a redelivery is safe.
"""

from __future__ import annotations

from django.db import OperationalError

from games.services.badges import badge_auto_unlock
from games.services.cleanup import cleanup_run
from games.services.live_stats import live_stats_sync
from games.services.notifications import notifications_deliver
from games.services.pools import prize_pool_finalise_due
from games.services.predictions import prediction_match
from games.services.ranking import leaderboard_rank_all
from games.services.stuck import stuck_session_finish
from scheduler.registry import Job, RetryPolicy, register

DB_TRANSIENT = RetryPolicy(retry_on=(OperationalError,), max_retries=3, backoff_base=30)

register(
    Job(
        name="badge-auto-unlock",
        task="games.badge_auto_unlock",
        service=badge_auto_unlock,
        cron="*/5 * * * *",
        offset=5,
        description="Award badges whose rules players now meet (games played, scores, pools "
        "won), each at most once per player, with a notification.",
        lock_ttl=120,
        time_limit=240,
        retry=DB_TRANSIENT,
    ),
    Job(
        name="stuck-session-finisher",
        task="games.stuck_session_finish",
        service=stuck_session_finish,
        cron="*/10 * * * *",
        offset=10,
        description="Finish sessions that reported a score but never sent 'finish' within "
        "their game's maximum duration, with their last score (boards and pools updated).",
        lock_ttl=120,
        time_limit=540,
        retry=DB_TRANSIENT,
    ),
    Job(
        name="leaderboard-ranking",
        task="games.leaderboard_rank",
        service=leaderboard_rank_all,
        cron="0 * * * *",
        offset=20,
        description="Rewrite the ranks of the 15 current boards, and of ended boards whose pool "
        "is not finalised yet (so finalisation finds them ranked), set-based; only rows whose "
        "rank changed are written.",
        queue="long",
        lock_ttl=300,
        time_limit=1800,
        retry=DB_TRANSIENT,
    ),
    Job(
        name="prediction-matcher",
        task="games.prediction_match",
        service=prediction_match,
        cron="*/5 * * * *",
        offset=25,
        description="Settle players' predictions about finalised prize pools, each exactly once.",
        lock_ttl=120,
        time_limit=240,
        retry=DB_TRANSIENT,
    ),
    Job(
        name="scheduled-notifications",
        task="games.notifications_deliver",
        service=notifications_deliver,
        cron="* * * * *",
        offset=30,
        description="Deliver due notifications from the outbox (claimed with SKIP LOCKED); a "
        "failing channel is retried with backoff, nothing is lost or sent twice.",
        priority=3,
        lock_ttl=60,
        # Every minute: stop starting rows after 20 s (~40,000 rows on the inbox channel here),
        # 5 s before the soft limit (25 s); the next minute's run takes the backlog.
        budget=20,
        time_limit=55,
        starting_deadline=55,
        retry=DB_TRANSIENT,
    ),
    Job(
        name="cleanup",
        task="games.cleanup",
        service=cleanup_run,
        cron="0 3 * * *",
        offset=35,
        description="Expire abandoned sessions, drop board entries of voided sessions, delete "
        "old expired sessions without money, in bounded batches (resumable).",
        queue="long",
        lock_ttl=300,
        # Stops starting batches after 10 minutes (the one limit; the next day's run resumes);
        # a batch takes ~0.3 s, so the soft limit (1170 s) is far away.
        budget=600,
        time_limit=1200,
        starting_deadline=3600,
        retry=DB_TRANSIENT,
    ),
    Job(
        name="live-stats-sync",
        task="games.live_stats_sync",
        service=live_stats_sync,
        cron="* * * * *",
        offset=45,
        description="Store a per-game snapshot (active sessions, players and sessions today, top "
        "score today, open pool amounts) for the admin and the API.",
        lock_ttl=60,
        time_limit=55,
        starting_deadline=55,
        # A missed minute is not worth catching up: the next one is a minute away.
        catch_up="skip",
        retry=DB_TRANSIENT,
    ),
    Job(
        name="prize-pool-finalisation",
        task="games.prize_pool_finalise",
        service=prize_pool_finalise_due,
        cron="0 0 * * *",
        offset=50,
        description="Finalise the daily pools of the day that ended and, on Mondays, the weekly "
        "pools of the ISO week that ended: winner, final ranks, one prize credit, rollover.",
        # Money: high priority on the default queue, not stuck behind a long ranking run.
        priority=0,
        lock_ttl=300,
        time_limit=900,
        starting_deadline=6 * 3600,
        retry=DB_TRANSIENT,
    ),
)
