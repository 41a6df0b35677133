"""One unprocessable row never wedges a games batch job, and every job stops at its budget.

Each poison test puts one row the job cannot process ahead of healthy ones and checks that the
healthy ones are done, the bad one is recorded (error stored, attempts counted), the job returns
normally, and a second run is not stuck on it either. Each budget test gives a run a spent budget
(or one that runs out after a row) and checks that it leaves a backlog the next run finishes.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import replace
from decimal import Decimal

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection

from games.models import (
    Badge,
    GameSession,
    InboxMessage,
    Notification,
    PlayerBadge,
    Prediction,
    PrizeCredit,
    PrizePool,
    RowFailure,
)
from games.periods import period_start
from games.services import (
    badge_auto_unlock,
    cleanup_run,
    game_session_report_score,
    game_session_start,
    notification_enqueue,
    notifications_deliver,
    prediction_match,
    prize_pool_finalise_due,
    stuck_session_finish,
)
from games.services.notifications import InboxChannel
from scheduler.budget import Budget
from scheduler.errors import RUN_INTERRUPTS
from tests.games.conftest import at

NOW = at(2026, 3, 4, 12, 0, 10)
POOL_MAX = Decimal("9999999999.99")  # numeric(12, 2)


def spent() -> Budget:
    return Budget(0)


def budget_of_rows(rows: int) -> Budget:
    """A budget that is spent after `rows` checks of `spent` come back False."""

    class Counted(Budget):
        checks = itertools.count()

        @property
        def spent(self) -> bool:
            return next(self.checks) >= rows

    return Counted(3600)


def stuck_session(player, game="pong", *, fee="1.00", minutes_ago=60, score=7) -> GameSession:
    session = game_session_start(
        player_id=player.pk,
        game=game,
        entry_fee=fee,
        now=NOW - dt.timedelta(minutes=minutes_ago),
    )
    game_session_report_score(session_id=session.pk, score=score, now=NOW - dt.timedelta(minutes=1))
    return session


def full_daily_pool(game: str) -> PrizePool:
    """Today's daily pool of `game`, so full that any share of a fee overflows its column."""
    return PrizePool.objects.create(
        game=game, period="daily", period_start=period_start("daily", NOW), amount=POOL_MAX
    )


# --- stuck-session-finisher ------------------------------------------------------------------


@pytest.mark.django_db
def test_a_session_whose_fee_overflows_the_pool_does_not_wedge_the_finisher(make_player):
    # given the oldest stuck session's fee overflows its pool column, then two ordinary ones
    player = make_player()
    full_daily_pool("snake")
    bad = stuck_session(player, "snake", minutes_ago=90)
    good = [stuck_session(player, "pong", minutes_ago=m) for m in (80, 70)]
    # when the finisher runs
    counts = stuck_session_finish(now=NOW)
    # then the ordinary ones are finished, the bad one is recorded and still active
    assert counts == {"finished": 2, "raced": 0, "failed": 1, "parked": 0, "backlog": 1}
    assert {s.status for s in GameSession.objects.filter(pk__in=[g.pk for g in good])} == {
        "finished"
    }
    assert GameSession.objects.get(pk=bad.pk).status == "active"
    failure = RowFailure.objects.get(job="stuck-session-finisher", row_id=bad.pk)
    assert failure.attempts == 1
    assert "numeric field overflow" in failure.last_error
    # and the next run tries it after healthy work, counts the attempt, and returns normally
    newer = stuck_session(player, "pong", minutes_ago=65)
    again = stuck_session_finish(now=NOW + dt.timedelta(minutes=10))
    assert (again["finished"], again["failed"]) == (1, 1)
    assert GameSession.objects.get(pk=newer.pk).status == "finished"
    failure.refresh_from_db()
    assert failure.attempts == 2


@pytest.mark.django_db
def test_a_session_out_of_attempts_is_parked_for_staff(make_player, settings):
    settings.GAMES = replace(settings.GAMES, row_max_attempts=2)
    full_daily_pool("snake")
    bad = stuck_session(make_player(), "snake")
    assert stuck_session_finish(now=NOW)["failed"] == 1
    assert stuck_session_finish(now=NOW)["failed"] == 1
    # at the limit it is left alone: no attempt, no backlog, reported as parked
    counts = stuck_session_finish(now=NOW)
    assert counts == {"finished": 0, "raced": 0, "failed": 0, "parked": 1, "backlog": 0}
    assert RowFailure.objects.get(row_id=bad.pk).attempts == 2
    # once staff fixed the cause and deleted the record, the next run finishes it
    PrizePool.objects.filter(game="snake").update(amount=0)
    RowFailure.objects.filter(row_id=bad.pk).delete()
    assert stuck_session_finish(now=NOW)["finished"] == 1


@pytest.mark.django_db
def test_a_recovered_session_is_finished_and_its_record_dropped(make_player):
    pool = full_daily_pool("snake")
    bad = stuck_session(make_player(), "snake")
    stuck_session_finish(now=NOW)
    pool.amount = 0
    pool.save()
    assert stuck_session_finish(now=NOW)["finished"] == 1
    assert GameSession.objects.get(pk=bad.pk).status == "finished"
    assert not RowFailure.objects.exists()


@pytest.mark.django_db
def test_the_finisher_stops_at_its_budget_and_the_next_run_goes_on(make_player, settings):
    settings.GAMES = replace(settings.GAMES, stuck_batch_size=2)
    player = make_player()
    for minutes in (90, 80, 70, 60, 50):
        stuck_session(player, "pong", minutes_ago=minutes)
    assert stuck_session_finish(now=NOW, budget=spent())["backlog"] == 5
    first = stuck_session_finish(now=NOW, budget=budget_of_rows(3))
    assert (first["finished"], first["backlog"]) == (2, 3)
    second = stuck_session_finish(now=NOW)
    assert (second["finished"], second["backlog"]) == (3, 0)


# --- scheduled-notifications -----------------------------------------------------------------


class NulChannel:
    """Raises with a NUL byte (and a lone surrogate) in its message for the titles in
    `failing`; delivers the others to the inbox, as the default channel does."""

    def __init__(self, failing=("bad",)):
        self.failing = set(failing)

    def send(self, notification, *, now):
        if notification.title in self.failing:
            raise ConnectionError("provider said \x00\udc80 and hung up")
        InboxChannel().send(notification, now=now)


def due_notifications(player, titles, *, due=NOW):
    for title in titles:
        notification_enqueue(player_id=player.pk, kind="test", title=title, due_at=due)


@pytest.mark.django_db
def test_a_nul_byte_in_a_channel_error_does_not_wedge_the_outbox(make_player):
    # given one due notification whose channel error contains a NUL byte, first in line, and
    # five ordinary ones
    player = make_player()
    due_notifications(player, ["bad"], due=NOW - dt.timedelta(minutes=1))
    due_notifications(player, [f"ok{i}" for i in range(5)])
    # when delivery runs
    counts = notifications_deliver(now=NOW, channel=NulChannel())
    # then the five are delivered, the bad one is recorded with a cleaned error and backoff
    assert counts == {"delivered": 5, "retried": 1, "failed": 0, "backlog": 0}
    assert InboxMessage.objects.count() == 5
    bad = Notification.objects.get(title="bad")
    assert (bad.status, bad.attempts) == ("pending", 1)
    assert bad.last_error == "ConnectionError: provider said \ufffd? and hung up"
    assert bad.next_attempt_at == NOW + dt.timedelta(seconds=60)
    # and the next run after the backoff, with new work, is not stuck on it either
    due_notifications(player, ["ok5"], due=NOW + dt.timedelta(minutes=1))
    later = NOW + dt.timedelta(minutes=2)
    again = notifications_deliver(now=later, channel=NulChannel())
    assert (again["delivered"], again["retried"]) == (1, 1)
    assert Notification.objects.get(title="bad").attempts == 2


@pytest.mark.django_db
def test_one_bad_row_in_an_inbox_batch_fails_alone(make_player):
    # given the inbox already holds a message for the oldest due notification (its batch
    # INSERT fails on the one-per-notification key), and five ordinary ones
    player = make_player()
    due_notifications(player, ["bad"], due=NOW - dt.timedelta(minutes=1))
    due_notifications(player, [f"ok{i}" for i in range(5)])
    InboxChannel().send(Notification.objects.get(title="bad"), now=NOW)
    # when the default channel delivers
    counts = notifications_deliver(now=NOW)
    # then the batch falls back to row by row: five delivered, the bad one recorded
    assert counts == {"delivered": 5, "retried": 1, "failed": 0, "backlog": 0}
    bad = Notification.objects.get(title="bad")
    assert (bad.status, bad.attempts) == ("pending", 1)
    assert bad.last_error.startswith("IntegrityError: ")


@pytest.mark.django_db
def test_a_poisoned_notification_fails_at_its_attempt_limit(make_player, settings):
    settings.GAMES = replace(settings.GAMES, notification_max_attempts=3)
    player = make_player()
    due_notifications(player, ["bad", "ok"])
    far = NOW
    for _ in range(3):
        notifications_deliver(now=far, channel=NulChannel())
        far += dt.timedelta(days=1)
    bad = Notification.objects.get(title="bad")
    assert (bad.status, bad.attempts) == ("failed", 3)
    assert notifications_deliver(now=far, channel=NulChannel())["backlog"] == 0


@pytest.mark.django_db
def test_delivery_stops_at_its_budget_and_the_next_run_goes_on(make_player, settings):
    settings.GAMES = replace(settings.GAMES, notification_batch_size=2)
    player = make_player()
    due_notifications(player, [f"n{i}" for i in range(5)])
    assert notifications_deliver(now=NOW, budget=spent()) == {
        "delivered": 0,
        "retried": 0,
        "failed": 0,
        "backlog": 5,
    }
    # (the inbox sends a batch at once: two checks pass, before the first and second batches)
    first = notifications_deliver(now=NOW, budget=budget_of_rows(2))
    assert (first["delivered"], first["backlog"]) == (4, 1)
    second = notifications_deliver(now=NOW)
    assert (second["delivered"], second["backlog"]) == (1, 0)
    assert InboxMessage.objects.count() == 5


# --- cleanup ---------------------------------------------------------------------------------


def abandoned(player, game="pong", *, fee="1.00", hours_ago=2) -> GameSession:
    return game_session_start(
        player_id=player.pk, game=game, entry_fee=fee, now=NOW - dt.timedelta(hours=hours_ago)
    )


@pytest.mark.django_db
def test_a_paid_session_cleanup_cannot_expire_does_not_wedge_cleanup(make_player):
    # given the oldest abandoned paid session's fee overflows its pool, then two ordinary ones
    player = make_player()
    full_daily_pool("snake")
    bad = abandoned(player, "snake", hours_ago=3)
    good = [abandoned(player, hours_ago=h) for h in (2, 1)]
    # when cleanup runs
    counts = cleanup_run(now=NOW)
    # then the ordinary ones are expired, the bad one is recorded, the run goes on and returns
    assert (counts["expired_paid"], counts["expire_failed"], counts["backlog"]) == (2, 1, 1)
    assert {s.status for s in GameSession.objects.filter(pk__in=[g.pk for g in good])} == {
        "expired"
    }
    assert GameSession.objects.get(pk=bad.pk).status == "active"
    failure = RowFailure.objects.get(job="cleanup", row_id=bad.pk)
    assert (failure.attempts, "numeric field overflow" in failure.last_error) == (1, True)
    # and the next run is not stuck on it: new work is done, the bad one counted again
    newer = abandoned(player, hours_ago=1)
    again = cleanup_run(now=NOW)
    assert (again["expired_paid"], again["expire_failed"]) == (1, 1)
    assert GameSession.objects.get(pk=newer.pk).status == "expired"
    failure.refresh_from_db()
    assert failure.attempts == 2


@pytest.mark.django_db
def test_cleanup_stops_at_its_budget_and_the_next_run_goes_on(make_player):
    player = make_player()
    for hours in (5, 4, 3):
        abandoned(player, hours_ago=hours)
    first = cleanup_run(now=NOW, budget=spent())
    assert (first["incomplete"], first["expired"], first["backlog"]) == (1, 0, 3)
    second = cleanup_run(now=NOW)
    assert (second["incomplete"], second["expired"], second["backlog"]) == (0, 3, 0)


# --- badge-auto-unlock -----------------------------------------------------------------------


def refuse_awards_of(badge: Badge) -> None:
    """A database error on every award of `badge` (standing for any: a constraint added later,
    a bad row), raised by a trigger; DDL in the test's transaction is rolled back with it."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""CREATE FUNCTION test_refuse_badge() RETURNS trigger AS $$
                BEGIN
                  IF NEW.badge_id = {int(badge.pk)} THEN RAISE EXCEPTION 'award refused'; END IF;
                  RETURN NEW;
                END $$ LANGUAGE plpgsql"""
        )
        cursor.execute(
            f"CREATE TRIGGER test_refuse_badge BEFORE INSERT ON {PlayerBadge._meta.db_table} "
            "FOR EACH ROW EXECUTE FUNCTION test_refuse_badge()"
        )


@pytest.mark.django_db
def test_a_badge_whose_awards_fail_does_not_stop_the_others(make_player, play):
    # given the first badge in line ("first-game") cannot be awarded, and a player who earns
    # it and "snake-1000"
    first = Badge.objects.order_by("id").first()
    assert first.code == "first-game"
    refuse_awards_of(first)
    player = make_player()
    play(player, "snake", score=1200, when=NOW - dt.timedelta(hours=1))
    # when badges are unlocked
    counts = badge_auto_unlock(now=NOW)
    # then the other badge is awarded and notified, the failing one recorded
    assert counts == {"snake-1000": 1, "awarded": 1, "failed": 1, "parked": 0, "backlog": 0}
    assert list(PlayerBadge.objects.values_list("badge__code", flat=True)) == ["snake-1000"]
    assert Notification.objects.filter(kind="badge").count() == 1
    failure = RowFailure.objects.get(job="badge-auto-unlock", row_id=first.pk)
    assert (failure.attempts, "award refused" in failure.last_error) == (1, True)
    # and the next run evaluates it last, counts the attempt, and awards new work
    play(player, "pong", score=30, when=NOW)
    again = badge_auto_unlock(now=NOW + dt.timedelta(minutes=5))
    assert (again.get("pong-21"), again["failed"]) == (1, 1)
    failure.refresh_from_db()
    assert failure.attempts == 2


@pytest.mark.django_db
def test_badges_stop_at_their_budget_and_the_next_run_goes_on(make_player, play):
    play(make_player(), "snake", score=1200, when=NOW - dt.timedelta(hours=1))
    active = Badge.objects.filter(active=True).count()
    first = badge_auto_unlock(now=NOW, budget=budget_of_rows(1))
    assert (first["awarded"], first["backlog"]) == (1, active - 1)  # "first-game" only
    second = badge_auto_unlock(now=NOW)
    assert (second["awarded"], second["backlog"]) == (1, 0)  # "snake-1000"


@pytest.mark.django_db
def test_a_badge_with_a_large_backlog_progresses_chunk_by_chunk_on_a_tiny_budget(
    make_player, play, settings
):
    from dataclasses import replace

    # given five players who earn "first-game", awarded two players per chunk
    settings.GAMES = replace(settings.GAMES, badge_batch_size=2)
    players = [make_player() for _ in range(5)]
    for player in players:
        play(player, "pong", score=3, when=NOW - dt.timedelta(hours=1))
    active = Badge.objects.filter(active=True).count()
    # when each run's budget is spent after its first chunk
    runs = [badge_auto_unlock(now=NOW, budget=budget_of_rows(1)) for _ in range(3)]
    # then every run awards one chunk, reports the badge as backlog until it is done
    assert [(r["awarded"], r["backlog"]) for r in runs] == [
        (2, active),
        (2, active),
        (1, active - 1),
    ]
    awarded = PlayerBadge.objects.filter(badge__code="first-game")
    assert sorted(awarded.values_list("player_id", flat=True)) == [p.pk for p in players]
    assert Notification.objects.filter(kind="badge").count() == 5
    # and a run with time left finishes the rest and awards nothing twice
    assert badge_auto_unlock(now=NOW)["backlog"] == 0
    assert badge_auto_unlock(now=NOW)["awarded"] == 0
    assert awarded.count() == 5


# --- prediction-matcher ----------------------------------------------------------------------


def refuse_settling(pool: PrizePool) -> None:
    """A database error on settling any prediction of `pool` (standing for any), by a trigger."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""CREATE FUNCTION test_refuse_pool() RETURNS trigger AS $$
                BEGIN
                  IF NEW.pool_id = {int(pool.pk)} THEN RAISE EXCEPTION 'settle refused'; END IF;
                  RETURN NEW;
                END $$ LANGUAGE plpgsql"""
        )
        cursor.execute(
            f"CREATE TRIGGER test_refuse_pool BEFORE UPDATE ON {Prediction._meta.db_table} "
            "FOR EACH ROW EXECUTE FUNCTION test_refuse_pool()"
        )


def closed_pools_with_predictions(make_player, play, games=("snake", "pong", "tetris")):
    """Yesterday's daily pools of `games`, each won by its own player and finalised, with one
    correct prediction each; returned in settling order (oldest id first)."""
    fan = make_player()
    winners = {game: make_player() for game in games}
    for game, winner in winners.items():
        play(winner, game, score=50, when=at(2026, 3, 3, 10), fee="1.00")
    prize_pool_finalise_due(now=at(2026, 3, 4, 0, 0, 50))
    pools = list(PrizePool.objects.filter(period="daily", game__in=games).order_by("id"))
    for pool in pools:
        Prediction.objects.create(
            player=fan, predicted_winner=winners[pool.game], pool=pool, created_at=NOW
        )
    return pools


@pytest.mark.django_db
def test_a_pool_whose_predictions_cannot_be_settled_does_not_stop_the_others(make_player, play):
    # given three closed pools with predictions, the first in line cannot be settled
    bad, *good = closed_pools_with_predictions(make_player, play)
    refuse_settling(bad)
    # when the matcher runs
    counts = prediction_match(now=NOW)
    # then the other pools' predictions are settled, the bad pool is recorded
    assert counts == {
        "correct": 2,
        "wrong": 0,
        "void": 0,
        "failed": 1,
        "parked": 0,
        "backlog": 1,
    }
    assert set(Prediction.objects.filter(outcome="correct").values_list("pool", flat=True)) == {
        p.pk for p in good
    }
    failure = RowFailure.objects.get(job="prediction-matcher", row_id=bad.pk)
    assert (failure.attempts, "settle refused" in failure.last_error) == (1, True)
    # and the next run tries it again, counts the attempt and returns normally
    assert prediction_match(now=NOW)["failed"] == 1
    failure.refresh_from_db()
    assert failure.attempts == 2


@pytest.mark.django_db
def test_the_matcher_stops_at_its_budget_and_the_next_run_goes_on(make_player, play):
    closed_pools_with_predictions(make_player, play)
    assert prediction_match(now=NOW, budget=spent())["backlog"] == 3
    first = prediction_match(now=NOW, budget=budget_of_rows(1))
    assert (first["correct"], first["backlog"]) == (1, 2)
    second = prediction_match(now=NOW)
    assert (second["correct"], second["backlog"]) == (2, 0)


class InterruptedChannel:
    def __init__(self, interrupt=SoftTimeLimitExceeded):
        self.interrupt = interrupt

    def send(self, notification, *, now):
        raise self.interrupt("run over")


@pytest.mark.django_db
@pytest.mark.parametrize("interrupt", RUN_INTERRUPTS)
def test_the_soft_time_limit_ends_the_run_and_blames_no_row(make_player, interrupt):
    # a run interrupted by Celery's soft limit (or a lost lease) inside a send is not that
    # row's failure: it propagates, and the row is untouched for the next run
    due_notifications(make_player(), ["n"])
    with pytest.raises(interrupt):
        notifications_deliver(now=NOW, channel=InterruptedChannel(interrupt))
    assert Notification.objects.get(title="n").attempts == 0
    assert not RowFailure.objects.exists()


# --- prize-pool-finalisation (bounded, not a batch job: fails loudly after the others) ---------


@pytest.mark.django_db
def test_a_pool_that_cannot_be_finalised_does_not_keep_the_others_open(make_player, play):
    # given yesterday's snake pool (first in line) cannot take its winner's credit, pong can
    ace = make_player()
    play(ace, "snake", score=50, when=at(2026, 3, 3, 10), fee="1.00")
    play(ace, "pong", score=5, when=at(2026, 3, 3, 11), fee="1.00")
    snake = PrizePool.objects.get(game="snake", period="daily")
    with connection.cursor() as cursor:
        cursor.execute(
            f"""CREATE FUNCTION test_refuse_credit() RETURNS trigger AS $$
                BEGIN
                  IF NEW.pool_id = {int(snake.pk)} THEN RAISE EXCEPTION 'credit refused'; END IF;
                  RETURN NEW;
                END $$ LANGUAGE plpgsql"""
        )
        cursor.execute(
            f"CREATE TRIGGER test_refuse_credit BEFORE INSERT ON {PrizeCredit._meta.db_table} "
            "FOR EACH ROW EXECUTE FUNCTION test_refuse_credit()"
        )
    # when finalisation runs, it finalises pong, records snake, and fails the run loudly
    with pytest.raises(Exception, match="credit refused"):
        prize_pool_finalise_due(now=at(2026, 3, 4, 0, 0, 50))
    assert PrizePool.objects.get(game="pong", period="daily").status == "finalised"
    snake.refresh_from_db()
    assert (snake.status, PrizeCredit.objects.filter(pool=snake).count()) == ("open", 0)
    failure = RowFailure.objects.get(job="prize-pool-finalisation", row_id=snake.pk)
    assert (failure.attempts, "credit refused" in failure.last_error) == (1, True)
    # and once the cause is gone, the next run finalises it and forgets the failure
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TRIGGER test_refuse_credit ON {PrizeCredit._meta.db_table}")
    counts = prize_pool_finalise_due(now=at(2026, 3, 4, 0, 5))
    assert (counts["finalised"], counts["due"]) == (1, 1)
    assert not RowFailure.objects.exists()
