import datetime as dt

import pytest

from scheduler.registry import all_jobs, discover, get_job

# A snapshot: renaming a job, a task or a schedule shows up in review (messages in flight and
# operators' scripts use these names).
EXPECTED = {
    "badge-auto-unlock": ("games.badge_auto_unlock", "*/5 * * * *", 5, "default"),
    "stuck-session-finisher": ("games.stuck_session_finish", "*/10 * * * *", 10, "default"),
    "leaderboard-ranking": ("games.leaderboard_rank", "0 * * * *", 20, "long"),
    "prediction-matcher": ("games.prediction_match", "*/5 * * * *", 25, "default"),
    "scheduled-notifications": ("games.notifications_deliver", "* * * * *", 30, "default"),
    "cleanup": ("games.cleanup", "0 3 * * *", 35, "long"),
    "live-stats-sync": ("games.live_stats_sync", "* * * * *", 45, "default"),
    "prize-pool-finalisation": ("games.prize_pool_finalise", "0 0 * * *", 50, "default"),
}


def test_games_jobs_are_registered_with_the_design_names_crons_and_offsets():
    discover()
    games_jobs = {job.name: job for job in all_jobs() if job.task.startswith("games.")}
    assert {
        name: (job.task, job.cron, job.offset, job.queue) for name, job in games_jobs.items()
    } == EXPECTED


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_job_runs_its_service_on_an_empty_database_and_returns_counts(name):
    discover()
    result = get_job(name).run_service(now=dt.datetime(2026, 3, 2, 0, 0, 50, tzinfo=dt.UTC))
    assert isinstance(result, dict)
    assert all(isinstance(value, int) for value in result.values())
