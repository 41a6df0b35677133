import datetime as dt
import threading
import time
from decimal import Decimal

import pytest
from django.db import connection, transaction

from games.models import GameSession, LeaderboardEntry, Notification, PrizeCredit, PrizePool
from games.services import (
    cleanup_run,
    game_session_void,
    leaderboard_rank_all,
    prize_pool_finalise,
    prize_pool_finalise_due,
)
from games.services.boards import board_has_unranked, boards_rank
from tests.games.conftest import at

WEDNESDAY = dt.date(2026, 3, 4)


def daily_pool(game="snake", day=WEDNESDAY):
    return PrizePool.objects.get(game=game, period="daily", period_start=day)


def entry(player, *, score, achieved_at, day=WEDNESDAY, game="snake"):
    return LeaderboardEntry.objects.create(
        player=player,
        game=game,
        period="daily",
        period_start=day,
        score=score,
        achieved_at=achieved_at,
        rank=1,  # deliberately stale: finalisation must not trust stored ranks
    )


@pytest.mark.django_db
def test_the_winner_is_the_highest_score_then_the_earliest_then_the_lowest_id(make_player):
    # given a pool and a board with ties on score and on achievement time
    PrizePool.objects.create(
        game="snake", period="daily", period_start=WEDNESDAY, amount=Decimal("9.00")
    )
    low, late, tie_second, tie_first = (make_player() for _ in range(4))
    entry(low, score=10, achieved_at=at(2026, 3, 4, 1))
    entry(late, score=50, achieved_at=at(2026, 3, 4, 9))
    first = entry(tie_first, score=50, achieved_at=at(2026, 3, 4, 8))
    second = entry(tie_second, score=50, achieved_at=at(2026, 3, 4, 8))
    assert first.pk < second.pk
    # when the day is over and the pool is finalised
    outcome = prize_pool_finalise(pool_id=daily_pool().pk, now=at(2026, 3, 5, 0, 0, 50))
    # then the earliest of the equal best scores, with the lowest id, wins the whole amount
    pool = daily_pool()
    assert outcome == "finalised"
    assert (pool.status, pool.winner_id, pool.winning_score) == ("finalised", tie_first.pk, 50)
    credit = PrizeCredit.objects.get(pool=pool)
    assert (credit.player_id, credit.amount) == (tie_first.pk, Decimal("9.00"))
    # and the board's final ranks are written in that order
    ranks = dict(LeaderboardEntry.objects.filter(period="daily").values_list("player_id", "rank"))
    assert ranks == {tie_first.pk: 1, tie_second.pk: 2, late.pk: 3, low.pk: 4}
    # and the winner is notified once
    assert Notification.objects.filter(player=tie_first, kind="pool_won").count() == 1


@pytest.mark.django_db
def test_an_empty_pool_has_no_winner_and_rolls_its_amount_into_the_next_day(make_player):
    # given Wednesday's pool of 7.50 with no entries, and Thursday's open pool of 1.00
    PrizePool.objects.create(
        game="tetris", period="daily", period_start=WEDNESDAY, amount=Decimal("7.50")
    )
    PrizePool.objects.create(
        game="tetris", period="daily", period_start=dt.date(2026, 3, 5), amount=Decimal("1.00")
    )
    # when finalisation runs at Thursday 00:00:50
    counts = prize_pool_finalise_due(now=at(2026, 3, 5, 0, 0, 50))
    # then Wednesday has no winner and Thursday carries its amount
    assert counts["no_winner"] == 1
    wednesday = daily_pool("tetris")
    thursday = daily_pool("tetris", dt.date(2026, 3, 5))
    assert (wednesday.status, wednesday.winner_id) == ("no_winner", None)
    assert (thursday.status, thursday.amount, thursday.carried_in) == (
        "open",
        Decimal("8.50"),
        Decimal("7.50"),
    )
    assert not PrizeCredit.objects.exists()


@pytest.mark.django_db
def test_a_rollover_creates_the_next_pool_and_chains_over_missed_days(make_player):
    # given two empty daily pools left open by missed runs, Monday and Tuesday
    for day, amount in ((dt.date(2026, 3, 2), "3.00"), (dt.date(2026, 3, 3), "2.00")):
        PrizePool.objects.create(
            game="pong", period="daily", period_start=day, amount=Decimal(amount)
        )
    # when finalisation runs on Wednesday (catching up both days, oldest first)
    counts = prize_pool_finalise_due(now=at(2026, 3, 4, 0, 0, 50))
    # then both have no winner and Wednesday's new pool holds all 5.00
    assert counts["no_winner"] == 2
    assert daily_pool("pong").amount == Decimal("5.00")
    assert daily_pool("pong").carried_in == Decimal("5.00")


@pytest.mark.django_db
def test_weekly_pools_are_finalised_when_their_iso_week_has_ended_on_monday(make_player, play):
    # given a weekly pool of the week starting Monday 2026-03-02 with one player on its board
    winner = make_player()
    play(winner, "breakout", score=7, when=at(2026, 3, 8, 23, 59, 59), fee="2.00")  # Sunday
    weekly = PrizePool.objects.get(game="breakout", period="weekly")
    assert weekly.period_start == dt.date(2026, 3, 2)
    # when finalisation runs on Sunday at 00:00:50 (the week is not over)
    prize_pool_finalise_due(now=at(2026, 3, 8, 0, 0, 50))
    # then the weekly pool stays open
    weekly.refresh_from_db()
    assert weekly.status == "open"
    # when it runs on Monday at 00:00:50
    counts = prize_pool_finalise_due(now=at(2026, 3, 9, 0, 0, 50))
    # then the weekly and Sunday's daily pool are finalised for the same winner
    weekly.refresh_from_db()
    assert (weekly.status, weekly.winner_id) == ("finalised", winner.pk)
    assert counts["finalised"] == 2
    assert PrizeCredit.objects.filter(player=winner).count() == 2


@pytest.mark.django_db
def test_a_pool_whose_period_has_not_ended_is_never_touched(play):
    # given a game finished one second before midnight UTC
    play(score=5, when=at(2026, 3, 4, 23, 59, 59), fee="1.00")
    pool = daily_pool()
    # when a finaliser runs just before midnight (e.g. a clock-skewed or manual run)
    assert prize_pool_finalise(pool_id=pool.pk, now=at(2026, 3, 4, 23, 59, 59)) == "skipped"
    assert prize_pool_finalise_due(now=at(2026, 3, 4, 23, 59, 59))["due"] == 0
    # then it is still open; at midnight exactly it is due
    assert daily_pool().status == "open"
    assert prize_pool_finalise_due(now=at(2026, 3, 5))["finalised"] == 1


@pytest.mark.django_db
def test_a_game_finished_at_midnight_counts_for_the_new_day(play):
    play(score=5, when=at(2026, 3, 5, 0, 0, 0), fee="1.00")
    assert PrizePool.objects.get(period="daily").period_start == dt.date(2026, 3, 5)


@pytest.mark.django_db
def test_finalising_twice_changes_nothing(make_player, play):
    # given a finalised pool
    play(score=5, when=at(2026, 3, 4, 12), fee="4.00")
    first = prize_pool_finalise_due(now=at(2026, 3, 5, 0, 0, 50))
    before = list(PrizePool.objects.order_by("id").values())
    # when the same slot runs again
    second = prize_pool_finalise_due(now=at(2026, 3, 5, 0, 0, 50))
    # then nothing changed and one credit exists
    assert first["finalised"] == 1
    assert second == {"finalised": 0, "no_winner": 0, "skipped": 0, "due": 0}
    assert list(PrizePool.objects.order_by("id").values()) == before
    assert PrizeCredit.objects.count() == 1
    assert Notification.objects.count() == 1


@pytest.mark.django_db
def test_a_late_game_of_a_closed_period_pays_into_the_next_pool(make_player, play):
    # given Wednesday's pool is finalised
    play(score=5, when=at(2026, 3, 4, 12), fee="2.00")
    prize_pool_finalise_due(now=at(2026, 3, 5, 0, 0, 50))
    # when a session finishing "at" Wednesday 23:59 commits afterwards
    late = make_player()
    play(late, score=999, when=at(2026, 3, 4, 23, 59), fee="2.00")
    # then the paid-out pool and its board are unchanged, and Thursday's pool took the share
    assert daily_pool().amount == Decimal("1.00")
    assert not LeaderboardEntry.objects.filter(player=late, period="daily").exists()
    assert daily_pool(day=dt.date(2026, 3, 5)).amount == Decimal("1.00")


def run_at_once(target, count=2):
    """Run `target` in `count` threads released together; each closes its DB connection."""
    barrier = threading.Barrier(count)
    results: list[object] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(target())
        except BaseException as exc:  # surfaced by the caller's assertion
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    return results


@pytest.mark.django_db(transaction=True)
def test_two_workers_finalising_one_pool_at_once_create_one_credit(play):
    # given a due pool with a winner
    play(score=5, when=at(2026, 3, 4, 12), fee="4.00")
    pool_id = daily_pool().pk
    # when two workers finalise it at the same moment (both reach the row lock)
    outcomes = run_at_once(lambda: prize_pool_finalise(pool_id=pool_id, now=at(2026, 3, 5, 0, 1)))
    # then one finalised it and the other found it closed: one credit, one notification
    assert sorted(outcomes) == ["finalised", "skipped"]
    assert PrizeCredit.objects.count() == 1
    assert Notification.objects.filter(kind="pool_won").count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_due_runs_at_once_finalise_each_pool_once(play):
    # given due pools of three games, two of them with a winner
    play(game="snake", score=5, when=at(2026, 3, 4, 12), fee="4.00")
    play(game="pong", score=6, when=at(2026, 3, 4, 13), fee="4.00")
    PrizePool.objects.create(game="tetris", period="daily", period_start=WEDNESDAY, amount=1)
    # when two runs of the same slot race
    results = run_at_once(lambda: prize_pool_finalise_due(now=at(2026, 3, 5, 0, 0, 50)))
    # then each pool was closed once
    assert sum(r["finalised"] for r in results) == 2
    assert sum(r["no_winner"] for r in results) == 1
    assert PrizeCredit.objects.count() == 2
    assert daily_pool("tetris", dt.date(2026, 3, 5)).amount == Decimal("1.00")


def backend_waits_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.django_db(transaction=True)
def test_a_session_voided_while_its_pool_is_finalised_never_wins(make_player, play):
    # given a cheat's 300 and an honest 100 on Wednesday's board, and a due pool
    cheat, honest = make_player(), make_player()
    cheat_session = play(cheat, score=300, when=at(2026, 3, 4, 10), fee="2.00")
    play(honest, score=100, when=at(2026, 3, 4, 11), fee="2.00")
    pool_id = daily_pool().pk
    voided, release = threading.Event(), threading.Event()
    outcome: list[object] = []

    def void() -> None:
        try:
            # staff void the cheat; the transaction is still open when finalisation starts
            with transaction.atomic():
                game_session_void(session_id=cheat_session.pk, now=at(2026, 3, 5, 0, 0, 10))
                voided.set()
                assert release.wait(timeout=30)
        finally:
            voided.set()
            connection.close()

    def finalise() -> None:
        try:
            outcome.append(prize_pool_finalise(pool_id=pool_id, now=at(2026, 3, 5, 0, 0, 50)))
        finally:
            connection.close()

    voider = threading.Thread(target=void)
    voider.start()
    assert voided.wait(timeout=30)
    finaliser = threading.Thread(target=finalise)
    finaliser.start()
    # when finalisation either finished already (no lock) or waits for the void's locks
    deadline = time.monotonic() + 30
    while finaliser.is_alive() and not backend_waits_on_a_lock():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    release.set()
    voider.join(timeout=30)
    finaliser.join(timeout=30)
    # then the pool went to the honest player: the voided session never wins
    assert outcome == ["finalised"]
    pool = daily_pool()
    assert pool.winner_id == honest.pk
    assert PrizeCredit.objects.get(pool=pool).player_id == honest.pk


@pytest.mark.django_db
def test_an_entry_of_a_voided_session_never_wins(make_player, play):
    # given the best entry's session voided behind the service's back (a bulk admin update)
    cheat, honest = make_player(), make_player()
    cheat_session = play(cheat, score=300, when=at(2026, 3, 4, 10), fee="2.00")
    play(honest, score=100, when=at(2026, 3, 4, 11), fee="2.00")
    GameSession.objects.filter(pk=cheat_session.pk).update(voided_at=at(2026, 3, 4, 12))
    # when the pool is finalised
    assert prize_pool_finalise(pool_id=daily_pool().pk, now=at(2026, 3, 5, 0, 0, 50)) == (
        "finalised"
    )
    # then the honest player wins, and the final ranks start with them
    assert daily_pool().winner_id == honest.pk
    board = LeaderboardEntry.objects.filter(period="daily", period_start=WEDNESDAY)
    assert list(board.order_by("rank").values_list("player_id", "rank")) == [(honest.pk, 1)]


@pytest.mark.django_db
def test_a_rollover_into_a_past_period_is_finalised_in_the_same_run():
    # given only Monday's empty pool of 3.00 left open by missed runs (no Tuesday pool yet)
    PrizePool.objects.create(
        game="pong", period="daily", period_start=dt.date(2026, 3, 2), amount=Decimal("3.00")
    )
    # when finalisation runs on Wednesday
    counts = prize_pool_finalise_due(now=at(2026, 3, 4, 0, 0, 50))
    # then the Tuesday pool the rollover created is closed in the same run, and the amount
    # reaches Wednesday's open pool at once instead of waiting a day in a past period
    assert (counts["no_winner"], counts["due"]) == (2, 2)
    tuesday = daily_pool("pong", dt.date(2026, 3, 3))
    assert (tuesday.status, tuesday.amount) == ("no_winner", Decimal("3.00"))
    wednesday = daily_pool("pong")
    assert (wednesday.status, wednesday.amount) == ("open", Decimal("3.00"))
    # and running again changes nothing
    assert prize_pool_finalise_due(now=at(2026, 3, 4, 0, 0, 50))["due"] == 0


def row_versions(**board):
    """(id, xmin) of a board's daily snake entries: a row rewritten by an UPDATE gets a new
    xmin."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, xmin::text FROM games_leaderboardentry "
            "WHERE game = 'snake' AND period = %s AND period_start = %s ORDER BY id",
            [board["period"], board["period_start"]],
        )
        return cursor.fetchall()


@pytest.mark.django_db
def test_a_board_ranked_since_its_last_change_keeps_its_rows_at_finalisation(make_player, play):
    # given Wednesday's board of three, ranked by the hourly run after its last game
    for score, hour in ((5, 9), (9, 10), (7, 11)):
        play(make_player(), score=score, when=at(2026, 3, 4, hour), fee="1.00")
    boards_rank([("snake", "daily", WEDNESDAY)])
    before = row_versions(period="daily", period_start=WEDNESDAY)
    # when the pool is finalised
    assert prize_pool_finalise(pool_id=daily_pool().pk, now=at(2026, 3, 5, 0, 0, 50)) == (
        "finalised"
    )
    # then its final ranks are the ones written, and not a row was rewritten
    board = LeaderboardEntry.objects.filter(period="daily", period_start=WEDNESDAY)
    assert list(board.order_by("rank").values_list("score", "rank")) == [(9, 1), (7, 2), (5, 3)]
    assert row_versions(period="daily", period_start=WEDNESDAY) == before
    assert daily_pool().winning_score == 9


@pytest.mark.django_db
def test_a_board_changed_after_its_last_ranking_gets_exact_final_ranks(make_player, play):
    # given a ranked board, then a new leader and a lost entry after the ranking
    first = play(make_player(), score=5, when=at(2026, 3, 4, 9), fee="1.00")
    play(make_player(), score=3, when=at(2026, 3, 4, 10), fee="1.00")
    boards_rank([("snake", "daily", WEDNESDAY)])
    play(make_player(), score=8, when=at(2026, 3, 4, 22), fee="1.00")
    # when the pool is finalised
    prize_pool_finalise(pool_id=daily_pool().pk, now=at(2026, 3, 5, 0, 0, 50))
    # then the final ranks follow the scores
    board = LeaderboardEntry.objects.filter(period="daily", period_start=WEDNESDAY)
    assert list(board.order_by("rank").values_list("score", "rank")) == [(8, 1), (5, 2), (3, 3)]
    assert daily_pool().winner_id != first.player_id


@pytest.mark.django_db
def test_cleanup_marks_the_board_of_a_pool_still_open_and_finalisation_closes_its_gap(
    make_player, play
):
    # given Wednesday's ranked board of three whose pool is still open on Thursday at 03:00
    # (finalisation late), and the leader's session voided behind the service's back
    leader = play(make_player(), score=9, when=at(2026, 3, 4, 9), fee="1.00")
    for score in (5, 3):
        play(make_player(), score=score, when=at(2026, 3, 4, 10), fee="1.00")
    boards_rank([("snake", "daily", WEDNESDAY)])
    GameSession.objects.filter(pk=leader.pk).update(voided_at=at(2026, 3, 4, 12))
    # when cleanup removes its entries (skipping the marks of boards without an open pool)
    assert cleanup_run(now=at(2026, 3, 5, 3, 0, 35))["entries_deleted"] == 3
    # then the board is marked, and finalisation writes ranks without a gap
    assert board_has_unranked(("snake", "daily", WEDNESDAY))
    prize_pool_finalise(pool_id=daily_pool().pk, now=at(2026, 3, 5, 3, 1))
    board = LeaderboardEntry.objects.filter(period="daily", period_start=WEDNESDAY)
    assert list(board.order_by("rank").values_list("score", "rank")) == [(5, 1), (3, 2)]


@pytest.mark.django_db
def test_after_the_ranking_at_00_00_20_finalisation_writes_no_rank_rows(
    make_player, play, monkeypatch
):
    # given Wednesday's board ranked by the 23:00:20 run, then games in the last hour (a new
    # leader, a better score): the board changed after its last ranking
    players = [make_player() for _ in range(4)]
    for player, score in zip(players, (5, 9, 7, 3), strict=True):
        play(player, score=score, when=at(2026, 3, 4, 12), fee="1.00")
    leaderboard_rank_all(now=at(2026, 3, 4, 23, 0, 20))
    play(make_player(), score=12, when=at(2026, 3, 4, 23, 30), fee="1.00")
    play(players[3], score=8, when=at(2026, 3, 4, 23, 59, 59), fee="1.00")
    assert board_has_unranked(("snake", "daily", WEDNESDAY))
    # when leaderboard-ranking runs at 00:00:20 (Thursday's boards are the current ones)
    counts = leaderboard_rank_all(now=at(2026, 3, 5, 0, 0, 20))
    # then it ranked Wednesday's board, its pool still open
    assert counts["ended_boards"] == 1
    assert counts[f"snake.daily.{WEDNESDAY.isoformat()}"] > 0
    assert not board_has_unranked(("snake", "daily", WEDNESDAY))
    before = row_versions(period="daily", period_start=WEDNESDAY)

    # when finalisation runs at 00:00:50
    def must_not_rank(boards):
        raise AssertionError(f"finalisation ranked {boards} itself")

    monkeypatch.setattr("games.services.pools.boards_rank", must_not_rank)
    assert prize_pool_finalise_due(now=at(2026, 3, 5, 0, 0, 50))["finalised"] == 1
    # then it wrote no rank row, and the final ranks are exact
    assert row_versions(period="daily", period_start=WEDNESDAY) == before
    board = LeaderboardEntry.objects.filter(period="daily", period_start=WEDNESDAY)
    assert list(board.order_by("rank").values_list("score", "rank")) == [
        (12, 1),
        (9, 2),
        (8, 3),
        (7, 4),
        (5, 5),
    ]
    assert daily_pool().winning_score == 12
    # and the next ranking leaves the finalised board alone
    assert leaderboard_rank_all(now=at(2026, 3, 5, 1, 0, 20))["ended_boards"] == 0


@pytest.mark.django_db
def test_without_the_midnight_ranking_finalisation_still_ranks_the_changed_board(make_player, play):
    # given the same last-hour change, and no ranking after it (late, failed)
    for score in (5, 9):
        play(make_player(), score=score, when=at(2026, 3, 4, 12), fee="1.00")
    leaderboard_rank_all(now=at(2026, 3, 4, 23, 0, 20))
    play(make_player(), score=12, when=at(2026, 3, 4, 23, 30), fee="1.00")
    # when finalisation runs
    prize_pool_finalise_due(now=at(2026, 3, 5, 0, 0, 50))
    # then the final ranks are exact all the same
    board = LeaderboardEntry.objects.filter(period="daily", period_start=WEDNESDAY)
    assert list(board.order_by("rank").values_list("score", "rank")) == [(12, 1), (9, 2), (5, 3)]


@pytest.mark.django_db(transaction=True)
def test_a_finalisation_during_the_midnight_ranking_waits_and_finds_the_board_ranked(
    make_player, play, monkeypatch
):
    # given Wednesday's board changed in its last hour, and the ranking at 00:00:20 that has
    # ranked it but not committed yet (it holds the pool's row)
    for score in (5, 9, 7):
        play(make_player(), score=score, when=at(2026, 3, 4, 23, 30), fee="1.00")
    real_rank = boards_rank
    ranked, release = threading.Event(), threading.Event()
    finaliser_ranked: list[object] = []

    def rank_then_pause(boards):
        written = real_rank(boards)
        ranked.set()
        assert release.wait(timeout=30)
        return written

    def finaliser_rank(boards):
        finaliser_ranked.append(boards)
        return real_rank(boards)

    monkeypatch.setattr("games.services.ranking.boards_rank", rank_then_pause)
    monkeypatch.setattr("games.services.pools.boards_rank", finaliser_rank)
    # keyed by thread: the ranking's commit wakes the finaliser, which may then finish first
    outcomes: dict[str, dict] = {}

    def ranking() -> None:
        try:
            outcomes["ranking"] = leaderboard_rank_all(now=at(2026, 3, 5, 0, 0, 20))
        finally:
            ranked.set()
            connection.close()

    def finalise() -> None:
        try:
            outcomes["finalise"] = prize_pool_finalise_due(now=at(2026, 3, 5, 0, 0, 50))
        finally:
            connection.close()

    ranker = threading.Thread(target=ranking)
    ranker.start()
    assert ranked.wait(timeout=30)
    # when finalisation starts meanwhile
    finaliser = threading.Thread(target=finalise)
    finaliser.start()
    deadline = time.monotonic() + 30
    while not backend_waits_on_a_lock():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # then it waits for the pool's row; once the ranking commits it finds the board ranked
    release.set()
    ranker.join(timeout=30)
    finaliser.join(timeout=30)
    assert set(outcomes) == {"ranking", "finalise"}
    assert outcomes["finalise"]["finalised"] == 1
    assert finaliser_ranked == []
    board = LeaderboardEntry.objects.filter(period="daily", period_start=WEDNESDAY)
    assert list(board.order_by("rank").values_list("score", "rank")) == [(9, 1), (7, 2), (5, 3)]


@pytest.mark.django_db(transaction=True)
def test_a_finish_waiting_on_a_pool_its_finaliser_closes_pays_into_the_next_pool_once(
    make_player, play
):
    from games.services import game_session_finish, game_session_start

    # given Wednesday's pool with a winner, and a late session of Wednesday 23:59
    play(score=5, when=at(2026, 3, 4, 12), fee="2.00")
    late = game_session_start(
        player_id=make_player().pk, game="snake", entry_fee="2.00", now=at(2026, 3, 4, 23, 50)
    )
    finished = threading.Event()

    def finish() -> None:
        try:
            game_session_finish(session_id=late.pk, score=999, now=at(2026, 3, 4, 23, 59))
        finally:
            finished.set()
            connection.close()

    # when it finishes while the finaliser holds the pool's row (it waits on the lock)
    with transaction.atomic():
        assert prize_pool_finalise(pool_id=daily_pool().pk, now=at(2026, 3, 5, 0, 1)) == (
            "finalised"
        )
        thread = threading.Thread(target=finish)
        thread.start()
        assert not finished.wait(0.5)  # blocked on Wednesday's pool row
    thread.join(timeout=30)
    # then the paid-out pool is unchanged and Thursday's took the share, once
    assert daily_pool().amount == Decimal("1.00")
    assert daily_pool(day=dt.date(2026, 3, 5)).amount == Decimal("1.00")
    assert GameSession.objects.get(pk=late.pk).status == "finished"
