import datetime as dt
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection

from games.models import GameSession, LeaderboardEntry, PrizePool
from games.services import (
    cleanup_run,
    game_session_expire,
    game_session_finish,
    game_session_report_score,
    game_session_void,
    leaderboard_rank_all,
    prize_pool_finalise,
)
from games.services.boards import board_has_unranked, boards_rank
from referrals.models import ReferralReward
from scheduler.budget import Budget
from tests.games.conftest import at
from tests.games.test_pools import WEDNESDAY, daily_pool

NOW = at(2026, 3, 4, 3, 0, 35)
OLD = NOW - dt.timedelta(days=40)


def sessions(player, count, *, status="expired", fee="0.00", started=OLD):
    return GameSession.objects.bulk_create(
        [
            GameSession(
                player=player,
                game="snake",
                status=status,
                entry_fee=Decimal(fee),
                started_at=started,
            )
            for _ in range(count)
        ]
    )


@pytest.fixture
def small_batches(settings):
    settings.GAMES = replace(settings.GAMES, cleanup_batch_size=10)


@pytest.mark.django_db
def test_active_sessions_past_the_expiry_become_expired(make_player, settings):
    # given sessions started 31 and 29 minutes ago, and an old one that reported a score
    settings.GAMES = replace(settings.GAMES, session_expiry_minutes=30)
    player = make_player()
    (stale,) = sessions(player, 1, status="active", started=NOW - dt.timedelta(minutes=31))
    (fresh,) = sessions(player, 1, status="active", started=NOW - dt.timedelta(minutes=29))
    (scored,) = sessions(player, 1, status="active", started=NOW - dt.timedelta(minutes=31))
    game_session_report_score(session_id=scored.pk, score=5, now=NOW)
    # when cleanup runs
    counts = cleanup_run(now=NOW)
    # then only the stale one expired (the scored one is the stuck-session finisher's)
    assert counts["expired"] == 1
    statuses = dict(GameSession.objects.values_list("id", "status"))
    assert statuses == {stale.pk: "expired", fresh.pk: "active", scored.pk: "active"}


@pytest.mark.django_db
def test_deletes_in_batches_up_to_the_boundary_and_never_a_session_with_money(
    make_player, small_batches
):
    # given 25 old free expired sessions (2 full batches + 5), 3 paid ones and 4 recent ones
    player = make_player()
    sessions(player, 25)
    paid = sessions(player, 3, fee="0.50")
    recent = sessions(player, 4, started=NOW - dt.timedelta(days=1))
    # when cleanup runs
    counts = cleanup_run(now=NOW)
    # then the 25 are gone in three batches of at most 10, the rest stays
    assert counts["sessions_deleted"] == 25
    assert set(GameSession.objects.values_list("id", flat=True)) == {s.pk for s in paid + recent}
    # and 2 full batches + a short one ended the step (3 more batches found nothing to do)
    assert counts["batches"] == 6


@pytest.mark.django_db
def test_an_exact_multiple_of_the_batch_size_needs_one_empty_batch_to_stop(
    make_player, small_batches
):
    player = make_player()
    sessions(player, 20)
    counts = cleanup_run(now=NOW)
    assert counts["sessions_deleted"] == 20
    # expire: 1 empty batch; sessions: 10 + 10 + 0; entries: 2 empty
    assert counts["batches"] == 6, counts


@pytest.mark.django_db
def test_an_interrupted_run_is_resumed_by_the_next_one(make_player, small_batches, monkeypatch):
    # given 25 deletable sessions and a run that runs out of time after its first batches
    player = make_player()
    sessions(player, 25)
    # a clock that advances 1 s per reading: each batch reads it 3 times, so the budget check
    # before the 4th batch (the 3rd deleting sessions) reads 9 s, past the 7 s budget
    ticks = itertools.count()
    budget = Budget(7, started=0.0)
    # (batches of 1 s on that clock would shrink; here they keep the size, as when fast)
    monkeypatch.setattr("games.services.cleanup.BATCH_TARGET_SECONDS", 10.0)
    monkeypatch.setattr("games.services.cleanup.time.monotonic", lambda: float(next(ticks)))
    first = cleanup_run(now=NOW, budget=budget)
    assert first["incomplete"] == 1
    assert first["sessions_deleted"] == 20
    assert first["backlog"] == 5
    # when the next run comes with time to spare
    monkeypatch.undo()
    second = cleanup_run(now=NOW)
    # then it finishes the rest and reports complete
    assert first["sessions_deleted"] + second["sessions_deleted"] == 25
    assert (second["incomplete"], second["backlog"]) == (0, 0)
    assert not GameSession.objects.exists()


def session_batch_sizes() -> tuple[list[int], Callable[..., Any]]:
    """A list that an execute wrapper fills with the row limit of each session-deleting batch."""
    sizes: list[int] = []

    def record(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        if f"DELETE FROM {GameSession._meta.db_table} s" in sql:
            sizes.append(params["n"])
        return execute(sql, params, many, context)

    return sizes, record


@pytest.mark.django_db
def test_slow_batches_make_the_next_ones_smaller_and_every_session_is_still_deleted(
    make_player, small_batches, monkeypatch
):
    # given 25 deletable sessions, batches of at most 10 that take 1 s each against a 0.3 s aim
    player = make_player()
    sessions(player, 25)
    ticks = itertools.count()
    monkeypatch.setattr("games.services.cleanup.time.monotonic", lambda: float(next(ticks)))
    sizes, record = session_batch_sizes()
    # when cleanup runs
    with connection.execute_wrapper(record):
        counts = cleanup_run(now=NOW)
    # then each batch asks for 0.3x the rows of the one before (at least 1), and all 25 go
    assert sizes[:4] == [10, 3, 1, 1]
    assert counts["sessions_deleted"] == 25 == sum(sizes[:-1])  # the last one found none
    assert not GameSession.objects.exists()


@pytest.mark.django_db
def test_a_step_starts_with_a_small_batch_and_doubles_while_batches_are_fast(
    make_player, monkeypatch
):
    # given 25 deletable sessions, a first batch of 2, no cap in reach, and instant batches
    player = make_player()
    sessions(player, 25)
    monkeypatch.setattr("games.services.cleanup.FIRST_BATCH_SIZE", 2)
    monkeypatch.setattr("games.services.cleanup.time.monotonic", lambda: 1000.0)
    sizes, record = session_batch_sizes()
    # when cleanup runs
    with connection.execute_wrapper(record):
        counts = cleanup_run(now=NOW)
    # then the batches grow 2x each (2 + 4 + 8 = 14, then 11 of 16 ends the step)
    assert sizes == [2, 4, 8, 16]
    assert counts["sessions_deleted"] == 25


def test_the_next_batch_size_follows_the_time_aim_within_its_bounds():
    from games.services.cleanup import BATCH_TARGET_SECONDS as aim
    from games.services.cleanup import _next_batch_size

    assert _next_batch_size(1000, aim, cap=10_000) == 1000  # on target: unchanged
    assert _next_batch_size(1000, aim * 4, cap=10_000) == 250  # 4x too slow: a quarter
    assert _next_batch_size(1000, aim / 10, cap=10_000) == 2000  # fast: at most 2x
    assert _next_batch_size(8000, aim / 10, cap=10_000) == 10_000  # never above the cap
    assert _next_batch_size(1, aim * 100, cap=10_000) == 1  # never below 1
    assert _next_batch_size(1000, 0.0, cap=10_000) == 2000  # an instant batch: 2x


@pytest.mark.django_db
def test_entries_of_voided_sessions_are_removed(make_player, play):
    # given a session voided behind the service's back (e.g. a bulk admin update)
    session = play(make_player(), score=5, when=NOW - dt.timedelta(hours=1))
    GameSession.objects.filter(pk=session.pk).update(voided_at=NOW)
    keep = play(make_player(), score=3, when=NOW - dt.timedelta(hours=1))
    # when cleanup runs
    counts = cleanup_run(now=NOW)
    # then its three entries are gone and the other player's stay
    assert counts["entries_deleted"] == 3
    assert set(LeaderboardEntry.objects.values_list("session_id", flat=True)) == {keep.pk}


@pytest.mark.django_db
def test_a_void_through_the_service_leaves_nothing_for_cleanup(make_player, play):
    session = play(make_player(), score=5, when=NOW - dt.timedelta(hours=1))
    game_session_void(session_id=session.pk, now=NOW)
    assert cleanup_run(now=NOW)["entries_deleted"] == 0
    assert not LeaderboardEntry.objects.exists()


@pytest.mark.django_db
def test_calling_cleanup_twice_changes_nothing_the_second_time(make_player, play):
    # given a mix of work for every step
    player = make_player()
    sessions(player, 5)
    sessions(player, 2, status="active", started=NOW - dt.timedelta(hours=2))
    sessions(player, 1, fee="1.00")
    cleanup_run(now=NOW)
    before = list(GameSession.objects.order_by("id").values())
    # when it runs again for the same slot
    again = cleanup_run(now=NOW)
    # then nothing changed
    assert (again["expired"], again["entries_deleted"], again["sessions_deleted"]) == (0, 0, 0)
    assert list(GameSession.objects.order_by("id").values()) == before


@pytest.mark.django_db
def test_the_next_ranking_closes_the_gaps_cleanup_leaves_on_current_boards(make_player, play):
    # given a ranked current board of three, whose leader's session is voided behind its back
    sessions_ = [play(make_player(), score=s, when=NOW - dt.timedelta(hours=1)) for s in (9, 5, 1)]
    leaderboard_rank_all(now=NOW)
    GameSession.objects.filter(pk=sessions_[0].pk).update(voided_at=NOW)
    # when cleanup removes its entries and the ranking runs
    assert cleanup_run(now=NOW)["entries_deleted"] == 3
    leaderboard_rank_all(now=NOW)
    # then the two left are ranked 1 and 2 on every board
    ranks = LeaderboardEntry.objects.order_by("period", "rank").values_list("period", "rank")
    assert list(ranks) == [(p, r) for p in ("all_time", "daily", "weekly") for r in (1, 2)]


@pytest.mark.django_db
def test_a_session_a_referral_reward_points_at_is_never_deleted(make_player):
    # given two old free expired sessions, one referenced by a referral reward (related_name "+")
    player, referrer = make_player(), make_player()
    referenced, _free = sessions(player, 2)
    ReferralReward.objects.create(
        session=referenced,
        tier=1,
        beneficiary=referrer,
        event_at=OLD,
        base_amount=Decimal("1.00"),
        rate=Decimal("0.10"),
        amount=Decimal("0.10"),
        created_at=OLD,
    )
    # when cleanup runs
    counts = cleanup_run(now=NOW)
    # then only the unreferenced one is deleted, and the reward's session is still there
    assert counts["sessions_deleted"] == 1
    assert set(GameSession.objects.values_list("id", flat=True)) == {referenced.pk}
    assert ReferralReward.objects.get().session_id == referenced.pk


def test_the_reference_guard_covers_hidden_relations():
    from games.services.cleanup import _session_referenced_elsewhere

    assert f"{ReferralReward._meta.db_table} r WHERE r.session_id = s.id" in (
        _session_referenced_elsewhere()
    )


@pytest.mark.django_db
def test_an_expired_paid_session_pays_its_fee_into_the_pools_once(make_player, settings):
    # given an abandoned paid session (no score ever reported) and a fresh paid one
    settings.GAMES = replace(settings.GAMES, session_expiry_minutes=30)
    player = make_player()
    (abandoned,) = sessions(
        player, 1, status="active", fee="1.01", started=NOW - dt.timedelta(hours=2)
    )
    sessions(player, 1, status="active", fee="5.00", started=NOW - dt.timedelta(minutes=5))
    # when cleanup runs, twice for the same slot
    first = cleanup_run(now=NOW)
    second = cleanup_run(now=NOW)
    # then the session is expired and its fee went to the pools open now, split like a finish
    # (0.505 -> 0.50 half-even to the daily pool, the exact rest to the weekly), exactly once
    assert (first["expired"], first["expired_paid"]) == (1, 1)
    assert (second["expired"], second["expired_paid"]) == (0, 0)
    abandoned.refresh_from_db()
    assert abandoned.status == "expired"
    pools = {(p.period, p.period_start): p.amount for p in PrizePool.objects.filter(game="snake")}
    assert pools == {
        ("daily", dt.date(2026, 3, 4)): Decimal("0.50"),
        ("weekly", dt.date(2026, 3, 2)): Decimal("0.51"),
    }
    # and it is on no board (it has no score) and never deleted (it moved money)
    assert not LeaderboardEntry.objects.exists()


@pytest.mark.django_db
def test_an_expired_paid_session_whose_day_was_finalised_pays_into_the_open_pool(
    make_player, settings
):
    # given a paid session abandoned yesterday, whose day's pool is finalised already
    settings.GAMES = replace(settings.GAMES, session_expiry_minutes=30)
    player = make_player()
    sessions(player, 1, status="active", fee="2.00", started=NOW - dt.timedelta(hours=20))
    yesterday = PrizePool.objects.create(
        game="snake", period="daily", period_start=dt.date(2026, 3, 3), amount=Decimal("3.00")
    )
    prize_pool_finalise(pool_id=yesterday.pk, now=NOW)
    # when cleanup runs
    cleanup_run(now=NOW)
    # then yesterday's closed pool is untouched and today's open one took the daily share
    yesterday.refresh_from_db()
    assert (yesterday.status, yesterday.amount) == ("no_winner", Decimal("3.00"))
    today = PrizePool.objects.get(period="daily", period_start=dt.date(2026, 3, 4))
    assert today.amount == Decimal("3.00") + Decimal("1.00")  # the rollover + the daily share


@pytest.mark.django_db
def test_a_paid_session_finished_meanwhile_is_not_expired(make_player, settings):
    settings.GAMES = replace(settings.GAMES, session_expiry_minutes=30)
    (session,) = sessions(
        make_player(), 1, status="active", fee="2.00", started=NOW - dt.timedelta(hours=1)
    )
    game_session_finish(session_id=session.pk, score=5, now=NOW - dt.timedelta(minutes=1))
    assert game_session_expire(session_id=session.pk, now=NOW) is False
    assert sum(p.amount for p in PrizePool.objects.all()) == Decimal("2.00")


@pytest.mark.django_db(transaction=True)
def test_cleanup_during_finalisation_leaves_no_gap_in_the_final_ranks(
    make_player, play, monkeypatch
):
    # given Wednesday's ranked board of three, one entry of which lost its session (deleted
    # behind the services' back: cleanup will remove the entry)
    for score in (9, 5, 3):
        play(make_player(), score=score, when=at(2026, 3, 4, 10), fee="1.00")
    boards_rank([("snake", "daily", WEDNESDAY)])
    LeaderboardEntry.objects.filter(period="daily", score=5).update(session=None)
    pool_id = daily_pool().pk
    real_check = board_has_unranked
    checked, release = threading.Event(), threading.Event()

    def check_then_pause(board):
        unranked = real_check(board)
        checked.set()
        assert release.wait(timeout=30)
        return unranked

    monkeypatch.setattr("games.services.pools.board_has_unranked", check_then_pause)
    outcome: list[object] = []

    def finalise() -> None:
        try:
            outcome.append(prize_pool_finalise(pool_id=pool_id, now=at(2026, 3, 5, 0, 0, 50)))
        finally:
            checked.set()
            connection.close()

    finaliser = threading.Thread(target=finalise)
    finaliser.start()
    try:
        # when cleanup runs while finalisation holds the pool, past its "board unchanged" check
        assert checked.wait(timeout=30)
        started = time.monotonic()
        first = cleanup_run(now=at(2026, 3, 5, 0, 0, 55))
        # then cleanup neither waits nor touches that board: the entry is left for later
        assert time.monotonic() - started < 10
        assert (first["entries_deleted"], first["entries_pool_busy"]) == (0, 1)
    finally:
        release.set()
        finaliser.join(timeout=30)
    assert outcome == ["finalised"]
    # and the final ranks run 1..N
    board = LeaderboardEntry.objects.filter(period="daily", period_start=WEDNESDAY)
    assert list(board.order_by("rank").values_list("score", "rank")) == [(9, 1), (5, 2), (3, 3)]
    # when the next cleanup removes the entry from the final board
    second = cleanup_run(now=at(2026, 3, 6, 3, 0, 35))
    # then it re-ranks that board in the same transaction: still 1..N, the winner unchanged
    assert (second["entries_deleted"], second["final_boards_reranked"]) == (1, 1)
    assert list(board.order_by("rank").values_list("score", "rank")) == [(9, 1), (3, 2)]
    assert daily_pool().winning_score == 9
