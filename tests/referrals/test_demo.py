import datetime as dt
import random

import pytest
from django.db import transaction

from games.models import GameSession
from referrals.demo import seed_referrals
from referrals.models import Referral, ReferralReward
from referrals.services import referral_chain_ids, referral_tier2_create, referral_tier3_create


@pytest.mark.django_db
def test_the_demo_forest_is_acyclic_deep_and_rewards_its_history(make_player):
    # given 200 players with paid sessions written without the signal (as the seeder's COPY)
    players = [make_player().pk for _ in range(200)]
    finished = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
    GameSession.objects.bulk_create(
        GameSession(
            player_id=p,
            game="pong",
            status="finished",
            entry_fee="2.00",
            started_at=finished - dt.timedelta(minutes=5),
            finished_at=finished,
        )
        for p in players
    )
    # when the demo forest is seeded
    created = seed_referrals(players=players, rng=random.Random(7))
    # then most players have a referrer, no chain loops, and some chains are deep
    assert created == Referral.objects.count()
    assert 140 <= created < 200
    depths = [len(referral_chain_ids(player_id=p)) - 1 for p in players]
    assert max(depths) >= 4
    assert all(
        len(set(referral_chain_ids(player_id=p))) == len(referral_chain_ids(player_id=p))
        for p in players
    )
    # and the history earns rewards: all three tiers backfilled, nothing left for the jobs
    assert ReferralReward.objects.filter(tier=1).count() == created
    assert ReferralReward.objects.filter(tier=2).count() > 0
    assert ReferralReward.objects.filter(tier=3).count() > 0
    now = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
    assert referral_tier2_create(now=now)["created"] == 0
    assert referral_tier3_create(now=now)["created"] == 0


@pytest.mark.django_db
def test_seeding_is_deterministic_for_a_seed(make_player):
    players = [make_player().pk for _ in range(50)]
    with transaction.atomic():
        seed_referrals(players=players, rng=random.Random(3))
        first = sorted(Referral.objects.values_list("referrer_id", "referee_id"))
        transaction.set_rollback(True)
    assert not Referral.objects.exists()
    seed_referrals(players=players, rng=random.Random(3))
    assert sorted(Referral.objects.values_list("referrer_id", "referee_id")) == first
    assert first
