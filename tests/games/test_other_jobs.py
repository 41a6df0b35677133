"""The five smaller jobs: what each does, and that calling it twice changes nothing."""

import datetime as dt
from dataclasses import replace
from decimal import Decimal

import pytest

from games.models import (
    GameSession,
    InboxMessage,
    LeaderboardEntry,
    LiveStatsSnapshot,
    Notification,
    PlayerBadge,
    Prediction,
    PrizePool,
)
from games.services import (
    badge_auto_unlock,
    game_session_report_score,
    game_session_start,
    live_stats_sync,
    notification_enqueue,
    notifications_deliver,
    prediction_match,
    prize_pool_finalise_due,
    stuck_session_finish,
)
from tests.games.conftest import at

NOW = at(2026, 3, 4, 12, 0, 10)


def snapshot(*models):
    return [list(m.objects.order_by("pk").values()) for m in models]


# --- stuck-session-finisher ------------------------------------------------------------------


@pytest.mark.django_db
def test_stuck_sessions_are_finished_with_their_last_score_once(make_player):
    # given a pong session (max 10 min) started 11 min ago that reported 7, a fresh one, and an
    # old one that never reported (cleanup's, not ours)
    player = make_player()
    stuck = game_session_start(
        player_id=player.pk, game="pong", entry_fee="1.00", now=NOW - dt.timedelta(minutes=11)
    )
    game_session_report_score(session_id=stuck.pk, score=7, now=NOW - dt.timedelta(minutes=9))
    fresh = game_session_start(player_id=player.pk, game="pong", now=NOW - dt.timedelta(minutes=5))
    game_session_report_score(session_id=fresh.pk, score=3, now=NOW)
    silent = game_session_start(player_id=player.pk, game="pong", now=NOW - dt.timedelta(hours=1))
    # when the finisher runs
    counts = stuck_session_finish(now=NOW)
    # then only the stuck one is finished, with its score on the boards and its fee in the pools
    assert counts == {"finished": 1, "raced": 0, "failed": 0, "parked": 0, "backlog": 0}
    stuck.refresh_from_db()
    assert (stuck.status, stuck.score, stuck.finished_at) == ("finished", 7, NOW)
    assert LeaderboardEntry.objects.filter(session=stuck).count() == 3
    assert sum(p.amount for p in PrizePool.objects.all()) == Decimal("1.00")
    assert GameSession.objects.get(pk=fresh.pk).status == "active"
    assert GameSession.objects.get(pk=silent.pk).status == "active"
    # and calling it twice changes nothing
    before = snapshot(GameSession, LeaderboardEntry, PrizePool)
    assert stuck_session_finish(now=NOW) == {
        "finished": 0,
        "raced": 0,
        "failed": 0,
        "parked": 0,
        "backlog": 0,
    }
    assert snapshot(GameSession, LeaderboardEntry, PrizePool) == before


# --- badge-auto-unlock -----------------------------------------------------------------------


@pytest.mark.django_db
def test_badges_are_awarded_once_with_one_notification(make_player, play):
    # given a player with a first game of 1,200 at snake and a player with nothing
    player = make_player()
    make_player()
    play(player, "snake", score=1200, when=NOW - dt.timedelta(hours=1))
    # when badges are unlocked
    counts = badge_auto_unlock(now=NOW)
    # then "first game" and "snake charmer" are awarded, each notified once
    assert counts == {
        "first-game": 1,
        "snake-1000": 1,
        "awarded": 2,
        "failed": 0,
        "parked": 0,
        "backlog": 0,
    }
    assert set(PlayerBadge.objects.values_list("badge__code", flat=True)) == {
        "first-game",
        "snake-1000",
    }
    assert Notification.objects.filter(kind="badge").count() == 2
    # and calling it twice changes nothing
    before = snapshot(PlayerBadge, Notification)
    assert badge_auto_unlock(now=NOW + dt.timedelta(minutes=5)) == {
        "awarded": 0,
        "failed": 0,
        "parked": 0,
        "backlog": 0,
    }
    assert snapshot(PlayerBadge, Notification) == before


@pytest.mark.django_db
def test_a_pool_win_unlocks_the_pool_winner_badge(make_player, play):
    player = make_player()
    play(player, "pong", score=3, when=at(2026, 3, 3, 10), fee="1.00")
    prize_pool_finalise_due(now=at(2026, 3, 4, 0, 0, 50))
    counts = badge_auto_unlock(now=NOW)
    assert counts["pool-winner"] == 1


# --- prediction-matcher ----------------------------------------------------------------------


@pytest.mark.django_db
def test_predictions_are_settled_once_when_their_pool_closes(make_player, play):
    # given a Tuesday pool won by `ace`, predictions for ace and for someone else, an empty pool
    ace, fan, doubter = make_player(), make_player(), make_player()
    play(ace, "snake", score=50, when=at(2026, 3, 3, 10), fee="2.00")
    won = PrizePool.objects.get(game="snake", period="daily")
    empty = PrizePool.objects.create(
        game="pong", period="daily", period_start=dt.date(2026, 3, 3), amount=0
    )
    for who, guess, pool in ((fan, ace, won), (doubter, fan, won), (fan, doubter, empty)):
        Prediction.objects.create(player=who, predicted_winner=guess, pool=pool, created_at=NOW)
    # when nothing is finalised yet, nothing is settled
    assert prediction_match(now=at(2026, 3, 3, 23)) == {
        "correct": 0,
        "wrong": 0,
        "void": 0,
        "failed": 0,
        "parked": 0,
        "backlog": 0,
    }
    # when the pools are finalised and the matcher runs
    prize_pool_finalise_due(now=at(2026, 3, 4, 0, 0, 50))
    counts = prediction_match(now=NOW)
    # then each prediction is settled, the right one scores and is notified
    assert counts == {
        "correct": 1,
        "wrong": 1,
        "void": 1,
        "failed": 0,
        "parked": 0,
        "backlog": 0,
    }
    right = Prediction.objects.get(player=fan, pool=won)
    assert (right.outcome, right.points, right.settled_at) == ("correct", 10, NOW)
    assert Notification.objects.filter(kind="prediction", player=fan).count() == 1
    # and calling it twice changes nothing
    before = snapshot(Prediction, Notification)
    assert prediction_match(now=NOW + dt.timedelta(minutes=5)) == {
        "correct": 0,
        "wrong": 0,
        "void": 0,
        "failed": 0,
        "parked": 0,
        "backlog": 0,
    }
    assert snapshot(Prediction, Notification) == before


# --- scheduled-notifications -----------------------------------------------------------------


class FlakyChannel:
    """Fails for the titles listed in `failing`; records what it delivered."""

    def __init__(self, failing=()):
        self.failing = set(failing)
        self.sent = []

    def send(self, notification, *, now):
        if notification.title in self.failing:
            raise ConnectionError("provider unavailable")
        self.sent.append(notification.title)


@pytest.mark.django_db
def test_due_notifications_are_delivered_to_the_inbox_once(make_player):
    # given two due notifications and one due later
    player = make_player()
    for title, due in (
        ("a", NOW),
        ("b", NOW - dt.timedelta(hours=1)),
        ("later", NOW + dt.timedelta(minutes=1)),
    ):
        notification_enqueue(player_id=player.pk, kind="test", title=title, due_at=due)
    # when delivery runs with the default (inbox) channel
    counts = notifications_deliver(now=NOW)
    # then the due ones are in the inbox and marked delivered
    assert counts == {"delivered": 2, "retried": 0, "failed": 0, "backlog": 0}
    assert sorted(InboxMessage.objects.values_list("title", flat=True)) == ["a", "b"]
    assert Notification.objects.get(title="later").status == "pending"
    # and calling it twice changes nothing
    before = snapshot(Notification, InboxMessage)
    assert notifications_deliver(now=NOW) == {
        "delivered": 0,
        "retried": 0,
        "failed": 0,
        "backlog": 0,
    }
    assert snapshot(Notification, InboxMessage) == before


@pytest.mark.django_db
def test_a_failing_channel_is_retried_later_and_never_loses_the_notification(make_player, settings):
    # given a notification whose channel fails, and one that goes through
    settings.GAMES = replace(
        settings.GAMES, notification_max_attempts=2, notification_retry_seconds=60
    )
    player = make_player()
    notification_enqueue(player_id=player.pk, kind="test", title="down", due_at=NOW)
    notification_enqueue(player_id=player.pk, kind="test", title="up", due_at=NOW)
    channel = FlakyChannel(failing={"down"})
    # when delivery runs: the failure does not block the other one
    assert notifications_deliver(now=NOW, channel=channel) == {
        "delivered": 1,
        "retried": 1,
        "failed": 0,
        "backlog": 0,
    }
    down = Notification.objects.get(title="down")
    assert (down.status, down.attempts, down.next_attempt_at) == (
        "pending",
        1,
        NOW + dt.timedelta(seconds=60),
    )
    assert "provider unavailable" in down.last_error
    # when it runs again before the backoff has passed, nothing is tried
    assert (
        notifications_deliver(now=NOW + dt.timedelta(seconds=30), channel=channel)["retried"] == 0
    )
    # when the provider is back after the backoff, it is delivered exactly once
    channel.failing.clear()
    later = NOW + dt.timedelta(seconds=61)
    assert notifications_deliver(now=later, channel=channel)["delivered"] == 1
    assert channel.sent == ["up", "down"]
    down.refresh_from_db()
    assert (down.status, down.attempts, down.delivered_at) == ("delivered", 2, later)


@pytest.mark.django_db
def test_a_notification_out_of_attempts_is_kept_as_failed(make_player, settings):
    settings.GAMES = replace(settings.GAMES, notification_max_attempts=1)
    player = make_player()
    notification_enqueue(player_id=player.pk, kind="test", title="down", due_at=NOW)
    counts = notifications_deliver(now=NOW, channel=FlakyChannel(failing={"down"}))
    assert counts["failed"] == 1
    assert Notification.objects.get(title="down").status == "failed"


@pytest.mark.django_db
def test_enqueueing_with_the_same_dedupe_key_adds_one_notification(make_player):
    player = make_player()
    added = [
        notification_enqueue(
            player_id=player.pk, kind="k", title="t", due_at=NOW, dedupe_key="pool-won:1"
        )
        for _ in range(2)
    ]
    assert added == [True, False]
    assert Notification.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_deliverers_at_once_deliver_each_notification_once(make_player):
    from tests.games.test_pools import run_at_once

    # given 300 due notifications (more than one batch of 200)
    player = make_player()
    for i in range(300):
        notification_enqueue(player_id=player.pk, kind="test", title=f"n{i}", due_at=NOW)
    # when two workers deliver at once
    results = run_at_once(lambda: notifications_deliver(now=NOW))
    # then every notification reached the inbox exactly once
    assert sum(r["delivered"] for r in results) == 300
    assert InboxMessage.objects.count() == 300
    assert not Notification.objects.exclude(status="delivered").exists()


# --- live-stats-sync -------------------------------------------------------------------------


@pytest.mark.django_db
def test_live_stats_are_stored_once_per_slot(make_player, play):
    # given two finished paid snake games today, one active one, and one from yesterday
    a, b = make_player(), make_player()
    play(a, "snake", score=40, when=NOW - dt.timedelta(hours=2), fee="1.00")
    play(b, "snake", score=90, when=NOW - dt.timedelta(hours=1), fee="1.00")
    play(b, "snake", score=500, when=NOW - dt.timedelta(days=1), fee="0")
    game_session_start(player_id=a.pk, game="snake", now=NOW - dt.timedelta(minutes=1))
    # when the stats are synced
    assert live_stats_sync(now=NOW) == {"snapshots": 5, "pruned": 0}
    # then the snake snapshot counts today's figures
    snake = LiveStatsSnapshot.objects.get(game="snake", taken_at=NOW)
    assert (
        snake.active_sessions,
        snake.players_today,
        snake.sessions_today,
        snake.top_score_today,
        snake.open_daily_pool,
        snake.open_weekly_pool,
    ) == (1, 2, 3, 90, Decimal("1.00"), Decimal("1.00"))
    assert LiveStatsSnapshot.objects.get(game="pong", taken_at=NOW).top_score_today is None
    # and calling it twice changes nothing
    before = snapshot(LiveStatsSnapshot)
    assert live_stats_sync(now=NOW) == {"snapshots": 0, "pruned": 0}
    assert snapshot(LiveStatsSnapshot) == before


@pytest.mark.django_db
def test_old_live_stats_are_pruned(settings):
    settings.GAMES = replace(settings.GAMES, live_stats_retention_hours=1)
    live_stats_sync(now=NOW - dt.timedelta(hours=2))
    assert live_stats_sync(now=NOW) == {"snapshots": 5, "pruned": 5}
