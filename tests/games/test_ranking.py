import datetime as dt
import threading
import time
from collections import defaultdict

import pytest
from django.db import connection, transaction
from django.db.models import F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from games.models import ALL_TIME_START, LeaderboardEntry, Player, PrizePool
from games.periods import period_start
from games.services import leaderboard_rank_all
from games.services.boards import board_has_unranked, boards_rank
from tests.games.conftest import at
from tests.games.test_pools import backend_waits_on_a_lock

NOW = at(2026, 3, 4, 10, 0, 20)
BOARDS = [
    ("daily", period_start("daily", NOW)),
    ("weekly", period_start("weekly", NOW)),
    ("all_time", ALL_TIME_START),
]


def expected_ranks(entries):
    """Independent computation: sort each board in Python by (-score, achieved_at, id)."""
    boards = defaultdict(list)
    for e in entries:
        boards[(e.game, e.period, e.period_start)].append(e)
    ranks = {}
    for rows in boards.values():
        for position, e in enumerate(sorted(rows, key=lambda e: (-e.score, e.achieved_at, e.pk))):
            ranks[e.pk] = position + 1
    return ranks


entry_rows = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=7),  # player index
        st.sampled_from(["snake", "pong"]),
        st.integers(min_value=0, max_value=2),  # board
        st.integers(min_value=0, max_value=4),  # few scores: many ties
        st.integers(min_value=0, max_value=3),  # few moments: ties on achieved_at too
    ),
    max_size=60,
)


changes = st.lists(
    st.tuples(
        st.sampled_from(["score", "delete"]),
        st.integers(min_value=0, max_value=59),  # which entry (modulo how many exist)
        st.integers(min_value=0, max_value=4),
    ),
    max_size=10,
)


@pytest.mark.django_db
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(rows=entry_rows, edits=changes)
def test_ranks_match_an_independent_python_computation(rows, edits):
    # each example runs in a savepoint rolled back at its end, so examples do not see each other
    with transaction.atomic():
        # given random boards with ties on score and on achieved_at, ranked once
        players = [Player.objects.create(handle=f"p{i}") for i in range(8)]
        seen = set()
        for player, game, board, score, minute in rows:
            period, start = BOARDS[board]
            if (player, game, board) in seen:
                continue
            seen.add((player, game, board))
            LeaderboardEntry.objects.create(
                player=players[player],
                game=game,
                period=period,
                period_start=start,
                score=score,
                achieved_at=at(2026, 3, 4, 9, minute),
            )
        leaderboard_rank_all(now=NOW)
        # and then changed behind the ranker's back: raw score updates and deletions
        ids = list(LeaderboardEntry.objects.order_by("id").values_list("id", flat=True))
        for kind, which, value in edits:
            if not ids:
                break
            target = ids[which % len(ids)]
            if kind == "score":
                LeaderboardEntry.objects.filter(pk=target).update(score=value)
            else:
                LeaderboardEntry.objects.filter(pk=target).delete()
                ids.remove(target)
        # when the boards are ranked again
        leaderboard_rank_all(now=NOW)
        # then every rank equals the Python ranking
        entries = list(LeaderboardEntry.objects.all())
        assert {e.pk: e.rank for e in entries} == expected_ranks(entries)
        transaction.set_rollback(True)


def make_entries(count, *, game="snake", period="daily", start=None):
    start = start or period_start(period, NOW)
    players = Player.objects.bulk_create(
        [Player(handle=f"{game}-{period}-{i}") for i in range(count)]
    )
    return LeaderboardEntry.objects.bulk_create(
        [
            LeaderboardEntry(
                player=p,
                game=game,
                period=period,
                period_start=start,
                score=i % 5,
                achieved_at=NOW - dt.timedelta(minutes=i),
            )
            for i, p in enumerate(players)
        ]
    )


@pytest.mark.django_db
def test_a_second_run_with_nothing_changed_writes_no_rows():
    # given ranked boards
    make_entries(30)
    make_entries(20, game="pong", period="weekly")
    first = leaderboard_rank_all(now=NOW)
    assert first["rows_written"] == 50
    assert first["snake.daily"] == 30
    assert first["pong.weekly"] == 20
    # when the ranking runs again
    second = leaderboard_rank_all(now=NOW)
    # then nothing is written
    assert second == {
        "rows_written": 0,
        "boards": 15,
        "ended_boards": 0,
        "boards_ranked": 0,
        "ended_boards_busy": 0,
    }


@pytest.mark.django_db
def test_boards_that_did_not_change_are_not_ranked_again():
    # given two ranked boards
    make_entries(30)
    make_entries(20, game="pong", period="weekly")
    leaderboard_rank_all(now=NOW)
    # when one entry of snake's daily board gets a new score (even through raw SQL)
    LeaderboardEntry.objects.filter(game="snake").order_by("id").filter(
        pk=LeaderboardEntry.objects.filter(game="snake").order_by("id").values("pk")[:1]
    ).update(score=1000)
    counts = leaderboard_rank_all(now=NOW)
    # then only that board is ranked
    assert counts["boards_ranked"] == 1
    assert "pong.weekly" not in counts
    assert counts["snake.daily"] >= 1


@pytest.mark.django_db
def test_a_deleted_entry_closes_the_gap_in_its_board():
    # given a ranked board of 5
    make_entries(5)
    leaderboard_rank_all(now=NOW)
    # when its leader is deleted
    LeaderboardEntry.objects.filter(rank=1).delete()
    counts = leaderboard_rank_all(now=NOW)
    # then the others move up to 1..4
    assert counts["boards_ranked"] == 1
    assert sorted(LeaderboardEntry.objects.values_list("rank", flat=True)) == [1, 2, 3, 4]


@pytest.mark.django_db
def test_only_rows_whose_rank_changed_are_written():
    # given a ranked board with distinct scores 0..9
    make_entries(10)
    LeaderboardEntry.objects.update(score=F("id") * 10)
    leaderboard_rank_all(now=NOW)
    third, fourth = LeaderboardEntry.objects.filter(rank__in=[3, 4]).order_by("rank")
    # when the 4th overtakes the 3rd
    LeaderboardEntry.objects.filter(pk=fourth.pk).update(score=third.score + 1)
    counts = leaderboard_rank_all(now=NOW)
    # then exactly the two rows that moved are written
    assert counts["snake.daily"] == 2
    assert counts["rows_written"] == 2
    assert LeaderboardEntry.objects.get(pk=fourth.pk).rank == 3


@pytest.mark.django_db
def test_boards_of_past_periods_without_an_open_pool_are_not_ranked():
    # given yesterday's daily board, unranked, with no pool (nothing will ever finalise it)
    make_entries(5, start=period_start("daily", NOW) - dt.timedelta(days=1))
    # when the ranking runs
    counts = leaderboard_rank_all(now=NOW)
    # then yesterday's board is left alone
    assert (counts["rows_written"], counts["ended_boards"]) == (0, 0)
    assert not LeaderboardEntry.objects.filter(rank__isnull=False).exists()


YESTERDAY = period_start("daily", NOW) - dt.timedelta(days=1)
LAST_WEEK = period_start("weekly", NOW) - dt.timedelta(days=7)


def board_versions(period, start):
    """(id, rank, xmin) of snake's entries on one board: a rewritten row gets a new xmin."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, rank, xmin::text FROM games_leaderboardentry "
            "WHERE game = 'snake' AND period = %s AND period_start = %s ORDER BY id",
            [period, start],
        )
        return cursor.fetchall()


@pytest.mark.django_db
def test_the_ranking_also_ranks_an_ended_board_whose_pool_is_still_open():
    # given yesterday's daily board, changed since its last ranking, whose pool is not finalised
    # yet (the run just after midnight, before finalisation)
    make_entries(6, start=YESTERDAY)
    PrizePool.objects.create(game="snake", period="daily", period_start=YESTERDAY, amount=5)
    # when the ranking runs
    counts = leaderboard_rank_all(now=NOW)
    # then that board is ranked exactly, alongside the current ones
    assert counts["ended_boards"] == 1
    assert counts[f"snake.daily.{YESTERDAY.isoformat()}"] == 6
    assert (counts["boards_ranked"], counts["rows_written"], counts["ended_boards_busy"]) == (
        1,
        6,
        0,
    )
    entries = list(LeaderboardEntry.objects.all())
    assert {e.pk: e.rank for e in entries} == expected_ranks(entries)
    # and a second run finds nothing to do
    again = leaderboard_rank_all(now=NOW)
    assert (again["ended_boards"], again["boards_ranked"], again["rows_written"]) == (1, 0, 0)


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["finalised", "no_winner"])
def test_the_ranking_never_touches_a_board_whose_pool_is_closed(make_player, status):
    # given last week's board and its pool, closed, with final ranks; then an entry changed
    # behind the services' back (its rank is now NULL)
    make_entries(5, period="weekly", start=LAST_WEEK)
    boards_rank([("snake", "weekly", LAST_WEEK)])
    PrizePool.objects.create(
        game="snake",
        period="weekly",
        period_start=LAST_WEEK,
        amount=0,
        status=status,
        winner=make_player() if status == "finalised" else None,
        winning_score=4 if status == "finalised" else None,
        finalised_at=NOW,
    )
    LeaderboardEntry.objects.filter(
        pk=LeaderboardEntry.objects.order_by("id").values("pk")[:1]
    ).update(score=1000)
    before = board_versions("weekly", LAST_WEEK)
    # when the ranking runs
    counts = leaderboard_rank_all(now=NOW)
    # then the final board is not even considered, and not a row of it was written
    assert (counts["ended_boards"], counts["rows_written"]) == (0, 0)
    assert board_versions("weekly", LAST_WEEK) == before


@pytest.mark.django_db
def test_a_pool_not_ended_yet_is_ranked_as_a_current_board_only():
    # given today's open pool and board (the period has not ended)
    make_entries(3)
    PrizePool.objects.create(
        game="snake", period="daily", period_start=period_start("daily", NOW), amount=1
    )
    # when the ranking runs, it is a current board, not an ended one
    counts = leaderboard_rank_all(now=NOW)
    assert (counts["ended_boards"], counts["snake.daily"], counts["rows_written"]) == (0, 3, 3)


@pytest.mark.django_db(transaction=True)
def test_an_ended_board_whose_pool_row_is_held_is_left_to_its_holder():
    # given yesterday's changed board whose open pool's row another transaction holds (a
    # finalisation, or a late game being written)
    make_entries(4, start=YESTERDAY)
    pool = PrizePool.objects.create(game="snake", period="daily", period_start=YESTERDAY, amount=5)
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        try:
            with transaction.atomic():
                PrizePool.objects.select_for_update().get(pk=pool.pk)
                held.set()
                assert release.wait(timeout=30)
        finally:
            held.set()
            connection.close()

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(timeout=30)
        # when the ranking runs meanwhile
        started = time.monotonic()
        counts = leaderboard_rank_all(now=NOW)
        # then it does not wait for the row, and leaves the board unranked to the holder
        assert time.monotonic() - started < 5
        assert (counts["ended_boards"], counts["ended_boards_busy"]) == (1, 1)
        assert counts["rows_written"] == 0
        assert board_has_unranked(("snake", "daily", YESTERDAY))
    finally:
        release.set()
        thread.join(timeout=30)
    # and once the row is free, the next run ranks it
    assert leaderboard_rank_all(now=NOW)["rows_written"] == 4


@pytest.mark.django_db
def test_several_boards_give_the_python_ranks():
    # given four boards with ties
    for game in ("snake", "pong"):
        for period in ("daily", "weekly"):
            make_entries(12, game=game, period=period)
    # when ranked
    counts = leaderboard_rank_all(now=NOW)
    # then every board is ranked as Python ranks it
    entries = list(LeaderboardEntry.objects.all())
    assert counts["rows_written"] == 48
    assert {e.pk: e.rank for e in entries} == expected_ranks(entries)


@pytest.mark.django_db(transaction=True)
def test_a_score_changed_while_the_ranking_runs_keeps_its_mark_for_the_next_run():
    # given a ranked board of 5 with distinct scores, then a new leader (the board changed)
    make_entries(5)
    LeaderboardEntry.objects.update(score=F("id") * 10)
    leaderboard_rank_all(now=NOW)
    LeaderboardEntry.objects.filter(pk=LeaderboardEntry.objects.order_by("id")[0].pk).update(
        score=10**12  # above any id * 10
    )
    moved = LeaderboardEntry.objects.get(rank=1)  # will move down one place when ranked
    changed, release = threading.Event(), threading.Event()

    def writer() -> None:
        try:
            # a writer gives `moved` a new score (its trigger unranks it) and has not committed
            with transaction.atomic():
                LeaderboardEntry.objects.filter(pk=moved.pk).update(score=moved.score + 5)
                changed.set()
                assert release.wait(timeout=30)
        finally:
            changed.set()
            connection.close()

    def ranker() -> None:
        try:
            boards_rank([("snake", "daily", period_start("daily", NOW))])
        finally:
            connection.close()

    threads = [threading.Thread(target=writer)]
    threads[0].start()
    assert changed.wait(timeout=30)
    threads.append(threading.Thread(target=ranker))
    threads[1].start()
    # when the ranking (from a snapshot without the new score) waits for that row, and the
    # writer commits
    deadline = time.monotonic() + 30
    while not backend_waits_on_a_lock():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    release.set()
    for thread in threads:
        thread.join(timeout=30)
    # then the stale rank did not overwrite the writer's mark: the board is still "changed"
    assert LeaderboardEntry.objects.get(pk=moved.pk).rank is None
    assert board_has_unranked(("snake", "daily", period_start("daily", NOW)))
    # and the next run ranks it exactly
    leaderboard_rank_all(now=NOW)
    assert dict(LeaderboardEntry.objects.values_list("pk", "rank")) == expected_ranks(
        LeaderboardEntry.objects.all()
    )
