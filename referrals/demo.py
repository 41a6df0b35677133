"""Demo data: a realistic referral forest among existing players (called by `seed_demo`).

Shape: about one player in eight joined on their own (a root); the others were referred by a
player who joined before them, chosen with a strong bias towards early players, so a few
referrers have large trees and chains run several levels deep, as in real programmes. Because
every referrer joined earlier, the forest has no cycle by construction; links still go through
`referral_create`, which would refuse one.

Each link is dated before the players' first session (they were referred when they signed up), so
the demo history qualifies. The seeder writes sessions with COPY, without the `session_finished`
signal, so their rewards are backfilled here, all three tiers (the events are older than the
tier jobs' cursor, so the jobs would not add tiers 2 and 3).
"""

from __future__ import annotations

import datetime as dt
import random

from django.db.models import Min
from django.utils import timezone

from games.models import GameSession, Player
from referrals.models import Referral
from referrals.services import ReferralError, referral_create, referral_tier1_backfill

ROOT_SHARE = 0.125


def seed_referrals(*, players: list[int], rng: random.Random) -> int:
    """Link `players` into a referral forest; returns the number of referrals created.

    Players that already have a referrer keep it. Deterministic for a given `rng` state.
    """
    if len(players) < 2:
        return 0
    order = list(players)
    rng.shuffle(order)
    earliest = GameSession.objects.filter(player_id__in=players).aggregate(first=Min("started_at"))[
        "first"
    ]
    joined = Player.objects.filter(pk__in=players).aggregate(first=Min("created_at"))["first"]
    linked_at = min(m for m in (earliest, joined, timezone.now()) if m is not None)
    linked_at -= dt.timedelta(days=1)
    already = set(
        Referral.objects.filter(referee_id__in=players).values_list("referee_id", flat=True)
    )

    created = 0
    for position, referee in enumerate(order):
        if position == 0 or referee in already or rng.random() < ROOT_SHARE:
            continue
        # rng.random() ** 3 leans towards 0: early joiners refer most of the others.
        referrer = order[int(position * rng.random() ** 3)]
        try:
            referral_create(referrer_id=referrer, referee_id=referee, now=linked_at)
        except ReferralError:
            continue  # existing links outside this forest can refuse one; the demo goes on
        created += 1
    referral_tier1_backfill(players=players, now=timezone.now())
    return created
