"""Property tests of the money invariants over random referral forests and sessions."""

import datetime as dt
from dataclasses import replace
from decimal import Decimal

import pytest
from django.conf import settings as django_settings
from django.db import transaction
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from games.services import game_session_finish, game_session_start, player_create
from referrals import conf
from referrals.models import ReferralReward, SettlementItem
from referrals.selectors import player_balance
from referrals.services import (
    ReferralError,
    payout_hold,
    referral_create,
    referral_tier2_create,
    referral_tier3_create,
    reward_amount,
    settlement_run,
)
from tests.referrals.conftest import LINKED_AT, assert_ledger_consistent, at

fees = st.decimals(min_value=0, max_value=Decimal("50"), places=2)


@pytest.mark.django_db
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_rewards_follow_the_forest_and_settlement_pays_each_item_once(data):
    size = data.draw(st.integers(min_value=2, max_value=8), label="players")
    # a forest: each player's parent is an earlier player or nobody (acyclic by construction)
    parents = [None] + [
        data.draw(st.none() | st.integers(0, i - 1), label=f"parent of {i}") for i in range(1, size)
    ]
    sessions = data.draw(
        st.lists(st.tuples(st.integers(0, size - 1), fees), max_size=12), label="sessions"
    )
    held = data.draw(st.sets(st.integers(0, size - 1), max_size=2), label="held")
    tier_batch = data.draw(st.integers(1, 4), label="tier batch")
    settle_batch = data.draw(st.integers(1, 6), label="settlement batch")
    jobs_in_order = data.draw(st.permutations(["tier2", "tier3"]), label="job order")

    with (
        override_settings(
            REFERRALS=replace(
                django_settings.REFERRALS,
                tier_batch_size=tier_batch,
                settlement_batch_size=settle_batch,
            )
        ),
        transaction.atomic(),
    ):
        players = [player_create(handle=f"prop-{i}") for i in range(size)]
        ids = [p.pk for p in players]
        links = [(parent, child) for child, parent in enumerate(parents) if parent is not None]
        for parent, child in data.draw(st.permutations(links), label="link order"):
            referral_create(referrer_id=ids[parent], referee_id=ids[child], now=LINKED_AT)
        # a player referring the top of its own tree is refused as a cycle
        for child, parent in enumerate(parents):
            root = parent
            while root is not None and parents[root] is not None:
                root = parents[root]
            if root is not None:
                with pytest.raises(ReferralError, match="would make a cycle"):
                    referral_create(referrer_id=ids[child], referee_id=ids[root])

        # when the players play and the jobs run
        played = []
        for minute, (who, fee) in enumerate(sessions):
            when = at(2026, 3, 4, 10) + dt.timedelta(minutes=minute)
            session = game_session_start(
                player_id=ids[who],
                game="tetris",
                entry_fee=fee,
                now=when - dt.timedelta(seconds=30),
            )
            played.append((game_session_finish(session_id=session.pk, now=when), who))
        now = at(2026, 3, 4, 12)
        for job in jobs_in_order:
            {"tier2": referral_tier2_create, "tier3": referral_tier3_create}[job](now=now)

        # then the rewards are exactly fee x rate per tier up the chain, rounded per reward
        rates = conf.load().rates
        expected = {}
        for session, who in played:
            ancestor = parents[who]
            for tier in (1, 2, 3):
                if ancestor is None:
                    break
                amount = reward_amount(session.entry_fee, rates[tier])
                if amount > 0:
                    expected[(session.pk, tier)] = (ids[ancestor], amount)
                ancestor = parents[ancestor]
        actual = {
            (r.session_id, r.tier): (r.beneficiary_id, r.amount)
            for r in ReferralReward.objects.filter(session__player_id__in=ids)
        }
        assert actual == expected
        assert sum(a for _, a in actual.values()) == sum(a for _, a in expected.values())

        # when some players are held and settlement runs twice
        for index in held:
            payout_hold(player_id=ids[index], reason="property test", now=now)
        settlement_run(now=now)
        settlement_run(now=now)

        # then every reward of a player not held is settled exactly once, held ones wait
        for reward in ReferralReward.objects.filter(session__player_id__in=ids):
            links_to_it = SettlementItem.objects.filter(reward=reward).count()
            is_held = ids.index(reward.beneficiary_id) in held
            assert (reward.status, links_to_it) == (("pending", 0) if is_held else ("settled", 1))
        for index, player_id in enumerate(ids):
            owed = sum(
                (a for (b, a) in expected.values() if b == player_id and index not in held),
                Decimal("0.00"),
            )
            assert player_balance(player_id=player_id) == owed
        assert_ledger_consistent()
        transaction.set_rollback(True)
