"""prediction_place: who may predict what, and when; settled by prediction-matcher."""

import datetime as dt
import threading

import pytest
from django.db import IntegrityError, connection, transaction

from games.models import Prediction, PrizePool
from games.services import (
    PredictionError,
    prediction_match,
    prediction_place,
    prize_pool_finalise_due,
)
from tests.games.conftest import at

WEDNESDAY = dt.date(2026, 3, 4)
DURING = at(2026, 3, 4, 15)


@pytest.fixture
def pool(db):
    return PrizePool.objects.create(game="snake", period="daily", period_start=WEDNESDAY, amount=5)


@pytest.mark.django_db
def test_a_player_predicts_the_winner_of_an_open_pool(make_player, pool):
    fan, ace = make_player(), make_player()
    prediction = prediction_place(
        player_id=fan.pk, pool_id=pool.pk, predicted_winner_id=ace.pk, now=DURING
    )
    assert (prediction.player_id, prediction.predicted_winner_id, prediction.outcome) == (
        fan.pk,
        ace.pk,
        "pending",
    )
    assert prediction.created_at == DURING


@pytest.mark.django_db
def test_one_prediction_per_player_and_pool(make_player, pool):
    fan, ace, other = make_player(), make_player(), make_player()
    prediction_place(player_id=fan.pk, pool_id=pool.pk, predicted_winner_id=ace.pk, now=DURING)
    with pytest.raises(PredictionError, match="already predicted pool"):
        prediction_place(
            player_id=fan.pk, pool_id=pool.pk, predicted_winner_id=other.pk, now=DURING
        )
    # the first one stands; another player may still predict
    assert Prediction.objects.get(player=fan).predicted_winner_id == ace.pk
    prediction_place(player_id=other.pk, pool_id=pool.pk, predicted_winner_id=fan.pk, now=DURING)
    assert Prediction.objects.count() == 2


@pytest.mark.django_db
def test_the_database_refuses_a_second_prediction_written_behind_the_service(make_player, pool):
    fan, ace = make_player(), make_player()
    prediction_place(player_id=fan.pk, pool_id=pool.pk, predicted_winner_id=ace.pk, now=DURING)
    with pytest.raises(IntegrityError), transaction.atomic():
        Prediction.objects.create(player=fan, pool=pool, predicted_winner=fan, created_at=DURING)


@pytest.mark.django_db
def test_no_prediction_once_the_period_has_ended(make_player, pool):
    fan, ace = make_player(), make_player()
    # the pool is still open (not finalised yet) but its day is over
    with pytest.raises(PredictionError, match="ended at 2026-03-05 00:00 UTC"):
        prediction_place(
            player_id=fan.pk, pool_id=pool.pk, predicted_winner_id=ace.pk, now=at(2026, 3, 5)
        )
    # the last moment of the day is still fine
    prediction_place(
        player_id=fan.pk,
        pool_id=pool.pk,
        predicted_winner_id=ace.pk,
        now=at(2026, 3, 4, 23, 59, 59),
    )


@pytest.mark.django_db
def test_no_prediction_for_a_closed_pool(make_player, pool):
    fan, ace = make_player(), make_player()
    prize_pool_finalise_due(now=at(2026, 3, 5, 0, 0, 50))  # no entries: no_winner
    with pytest.raises(PredictionError, match=r"is closed \(no_winner\)"):
        prediction_place(player_id=fan.pk, pool_id=pool.pk, predicted_winner_id=ace.pk, now=DURING)
    assert not Prediction.objects.exists()


@pytest.mark.django_db
def test_unknown_pool_and_players_are_refused_by_name(make_player, pool):
    fan = make_player()
    with pytest.raises(PredictionError, match="pool 999999 does not exist"):
        prediction_place(player_id=fan.pk, pool_id=999999, predicted_winner_id=fan.pk, now=DURING)
    with pytest.raises(PredictionError, match="predicted winner 999999 does not exist"):
        prediction_place(player_id=fan.pk, pool_id=pool.pk, predicted_winner_id=999999, now=DURING)
    with pytest.raises(PredictionError, match="player 999999 does not exist"):
        prediction_place(player_id=999999, pool_id=pool.pk, predicted_winner_id=fan.pk, now=DURING)
    assert not Prediction.objects.exists()


@pytest.mark.django_db
def test_a_placed_prediction_is_settled_when_the_pool_is_finalised(make_player, play):
    ace, fan = make_player(), make_player()
    play(ace, score=50, when=at(2026, 3, 4, 10), fee="2.00")
    pool = PrizePool.objects.get(game="snake", period="daily", period_start=WEDNESDAY)
    prediction_place(player_id=fan.pk, pool_id=pool.pk, predicted_winner_id=ace.pk, now=DURING)
    prize_pool_finalise_due(now=at(2026, 3, 5, 0, 0, 50))
    assert prediction_match(now=at(2026, 3, 5, 0, 5, 25))["correct"] == 1
    assert Prediction.objects.get(player=fan).points > 0


@pytest.mark.django_db(transaction=True)
def test_two_predictions_of_one_player_at_once_place_one(make_player):
    pool = PrizePool.objects.create(game="snake", period="daily", period_start=WEDNESDAY, amount=5)
    fan, ace, other = make_player(), make_player(), make_player()
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def place(guess: int) -> None:
        try:
            barrier.wait(timeout=30)
            prediction_place(
                player_id=fan.pk, pool_id=pool.pk, predicted_winner_id=guess, now=DURING
            )
            outcomes.append("placed")
        except PredictionError as exc:
            outcomes.append(str(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=place, args=(guess,)) for guess in (ace.pk, other.pk)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert outcomes.count("placed") == 1
    assert [o for o in outcomes if o != "placed"] == [
        f"player {fan.pk} already predicted pool {pool.pk}; one prediction per player and pool"
    ]
    assert Prediction.objects.filter(player=fan, pool=pool).count() == 1
