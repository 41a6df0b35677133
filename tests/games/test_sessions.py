import datetime as dt
from decimal import Decimal

import pytest

from games.models import GameSession, LeaderboardEntry, PrizePool
from games.services import (
    SessionStateError,
    game_session_finish,
    game_session_report_score,
    game_session_start,
    game_session_void,
    prize_pool_finalise,
)
from games.signals import session_finished
from tests.games.conftest import at


def boards_of(player):
    return {
        (e.period, e.period_start): (e.score, e.session_id)
        for e in LeaderboardEntry.objects.filter(player=player)
    }


@pytest.mark.django_db
def test_finishing_a_session_puts_its_score_on_the_three_boards(make_player, play):
    # given a player
    player = make_player()
    # when they finish a snake game on Wednesday 2026-03-04
    session = play(player, "snake", score=120, when=at(2026, 3, 4, 10))
    # then the daily, weekly (Monday 2026-03-02) and all-time boards hold it
    assert boards_of(player) == {
        ("daily", dt.date(2026, 3, 4)): (120, session.pk),
        ("weekly", dt.date(2026, 3, 2)): (120, session.pk),
        ("all_time", dt.date(2000, 1, 1)): (120, session.pk),
    }


@pytest.mark.django_db
def test_a_lower_or_equal_score_does_not_replace_the_best(make_player, play):
    # given a best of 100
    player = make_player()
    best = play(player, score=100, when=at(2026, 3, 4, 10))
    # when the player scores 100 again and then 50
    play(player, score=100, when=at(2026, 3, 4, 11))
    play(player, score=50, when=at(2026, 3, 4, 12))
    # then the first 100 is still the entry, with its achievement time
    entry = LeaderboardEntry.objects.get(player=player, period="daily")
    assert (entry.score, entry.session_id, entry.achieved_at) == (100, best.pk, at(2026, 3, 4, 10))


@pytest.mark.django_db
def test_the_entry_fee_is_split_exactly_between_daily_and_weekly_pools(make_player, play):
    # given two paid games of 1.01 each (a half cent in each share)
    play(score=1, when=at(2026, 3, 4, 10), fee="1.01")
    play(score=2, when=at(2026, 3, 4, 11), fee="1.01")
    # then the pools hold exactly 2.02 together, split half-even per fee
    daily = PrizePool.objects.get(game="snake", period="daily", period_start=dt.date(2026, 3, 4))
    weekly = PrizePool.objects.get(game="snake", period="weekly", period_start=dt.date(2026, 3, 2))
    assert daily.amount + weekly.amount == Decimal("2.02")
    assert daily.amount == Decimal("1.00")  # 0.505 -> 0.50 (half-even), twice


@pytest.mark.django_db
def test_a_free_game_creates_no_pool(play):
    play(score=1, when=at(2026, 3, 4, 10), fee="0")
    assert not PrizePool.objects.exists()


@pytest.mark.django_db
def test_session_finished_is_sent_inside_the_transaction(make_player, play):
    # given a receiver that fails
    def receiver(sender, session, **kwargs):
        raise RuntimeError("referrals are down")

    session_finished.connect(receiver)
    try:
        player = make_player()
        session = game_session_start(player_id=player.pk, game="pong", entry_fee="2.00")
        # when the session is finished, then the failure rolls the whole finish back
        with pytest.raises(RuntimeError):
            game_session_finish(session_id=session.pk, score=3, now=at(2026, 3, 4, 10))
    finally:
        session_finished.disconnect(receiver)
    session.refresh_from_db()
    assert session.status == "active"
    assert not LeaderboardEntry.objects.exists()
    assert not PrizePool.objects.exists()


@pytest.mark.django_db
def test_finishing_twice_changes_nothing(make_player):
    # given a finished paid session
    player = make_player()
    session = game_session_start(player_id=player.pk, game="pong", entry_fee="2.00")
    game_session_finish(session_id=session.pk, score=5, now=at(2026, 3, 4, 10))
    # when finish is called again (a client retry) with another score
    again = game_session_finish(session_id=session.pk, score=99, now=at(2026, 3, 4, 11))
    # then nothing moved
    assert (again.score, again.finished_at) == (5, at(2026, 3, 4, 10))
    assert sum(p.amount for p in PrizePool.objects.all()) == Decimal("2.00")


@pytest.mark.django_db
def test_a_score_report_is_kept_and_used_when_finish_sends_none(make_player):
    player = make_player()
    session = game_session_start(player_id=player.pk, game="tetris")
    game_session_report_score(session_id=session.pk, score=40, now=at(2026, 3, 4, 10))
    finished = game_session_finish(session_id=session.pk, now=at(2026, 3, 4, 10, 5))
    assert finished.score == 40
    with pytest.raises(SessionStateError):
        game_session_report_score(session_id=session.pk, score=41)


@pytest.mark.django_db
def test_voiding_rebuilds_the_entries_from_the_other_sessions(make_player, play):
    # given a best of 300 on Wednesday and an 80 on Tuesday of the same week
    player = make_player()
    tuesday = play(player, score=80, when=at(2026, 3, 3, 10))
    cheat = play(player, score=300, when=at(2026, 3, 4, 10))
    # when the 300 is voided
    counts = game_session_void(session_id=cheat.pk, now=at(2026, 3, 4, 12))
    # then weekly and all-time fall back to Tuesday's 80 and Wednesday's daily entry is gone
    assert counts == {"updated": 2, "deleted": 1, "unchanged": 0}
    assert boards_of(player) == {
        ("daily", dt.date(2026, 3, 3)): (80, tuesday.pk),
        ("weekly", dt.date(2026, 3, 2)): (80, tuesday.pk),
        ("all_time", dt.date(2000, 1, 1)): (80, tuesday.pk),
    }
    # and voiding twice changes nothing
    assert game_session_void(session_id=cheat.pk) == {"updated": 0, "deleted": 0, "unchanged": 0}
    assert GameSession.objects.get(pk=cheat.pk).voided_at == at(2026, 3, 4, 12)


@pytest.mark.django_db
@pytest.mark.parametrize("fee", ["0.005", "1.001", Decimal("2.999"), "-1.00", "-0.01", "NaN", "x"])
def test_an_entry_fee_that_is_not_whole_cents_or_is_negative_is_refused(make_player, fee):
    # given a player; when a session starts with a sub-cent, negative or non-numeric fee
    player = make_player()
    with pytest.raises(ValueError, match="entry_fee"):
        game_session_start(player_id=player.pk, game="snake", entry_fee=fee)
    # then no session exists (nothing was rounded into one)
    assert not GameSession.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fee", "stored"), [("1", "1.00"), ("1.5", "1.50"), ("0.10", "0.10"), (2, "2.00")]
)
def test_an_entry_fee_in_whole_cents_is_kept_exactly(make_player, fee, stored):
    session = game_session_start(player_id=make_player().pk, game="snake", entry_fee=fee)
    session.refresh_from_db()
    assert session.entry_fee == Decimal(stored)


@pytest.mark.django_db
def test_a_void_never_puts_a_late_session_onto_a_final_board(make_player, play):
    # given Wednesday's pool finalised with a cheat's 300 on top of an honest 100
    cheat, honest = make_player(), make_player()
    cheat_best = play(cheat, score=300, when=at(2026, 3, 4, 12), fee="2.00")
    play(honest, score=100, when=at(2026, 3, 4, 13), fee="2.00")
    wednesday = PrizePool.objects.get(period="daily", period_start=dt.date(2026, 3, 4))
    assert prize_pool_finalise(pool_id=wednesday.pk, now=at(2026, 3, 5, 0, 0, 50)) == "finalised"
    # and a late session of the cheat "at" Wednesday 23:59, committed after the finalisation
    # (finish leaves it off Wednesday's final board)
    late = play(cheat, score=200, when=at(2026, 3, 4, 23, 59), fee="2.00")
    daily = LeaderboardEntry.objects.filter(period="daily", period_start=dt.date(2026, 3, 4))
    assert not daily.filter(session=late).exists()
    # when the 300 is voided
    game_session_void(session_id=cheat_best.pk, now=at(2026, 3, 5, 9))
    # then the final board does not take the late session: the voided entry just leaves it,
    # and its ranks run 1..N again
    assert list(daily.order_by("rank").values_list("player_id", "rank")) == [(honest.pk, 1)]
    # and the open weekly and all-time boards fall back to the late 200 as usual
    assert boards_of(cheat) == {
        ("weekly", dt.date(2026, 3, 2)): (200, late.pk),
        ("all_time", dt.date(2000, 1, 1)): (200, late.pk),
    }
    # and the finalised pool keeps its winner (a void is not a clawback)
    wednesday.refresh_from_db()
    assert wednesday.winner_id == cheat.pk
