import datetime as dt
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from games.models import ALL_TIME_START, LeaderboardEntry, Player, PrizePool


@pytest.mark.django_db
def test_a_weekly_pool_must_start_on_a_monday():
    # given a Tuesday
    tuesday = dt.date(2026, 3, 3)
    # when / then
    with pytest.raises(IntegrityError), transaction.atomic():
        PrizePool.objects.create(game="snake", period="weekly", period_start=tuesday)
    PrizePool.objects.create(game="snake", period="weekly", period_start=dt.date(2026, 3, 2))


@pytest.mark.django_db
def test_pool_money_cannot_be_negative():
    with pytest.raises(IntegrityError), transaction.atomic():
        PrizePool.objects.create(
            game="pong", period="daily", period_start=dt.date(2026, 3, 3), amount=Decimal("-0.01")
        )


@pytest.mark.django_db
def test_one_entry_per_player_and_board():
    # given a player with an all-time entry
    player = Player.objects.create(handle="ada")
    fields = {
        "player": player,
        "game": "tetris",
        "period": "all_time",
        "period_start": ALL_TIME_START,
        "score": 10,
        "achieved_at": dt.datetime(2026, 3, 3, tzinfo=dt.UTC),
    }
    LeaderboardEntry.objects.create(**fields)
    # when a second one is written, then the database refuses it
    with pytest.raises(IntegrityError), transaction.atomic():
        LeaderboardEntry.objects.create(**fields)
