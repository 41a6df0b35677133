"""The referral graph: who referred whom. A forest: one referrer per player, set once, no cycles.

Why a cycle check needs locks: two requests "A refers B" and "B refers A" each see a graph
without the other's edge and would both commit a cycle. `referral_create` therefore locks, with
FOR NO KEY UPDATE, the referee and every player on the referrer's chain up to its top (the first
player without a referrer), then walks the chain again and locks what it did not see, until the
walk finds nothing new. Any concurrent edge that could close a cycle through this chain must give
a referrer to a player on it; the only one without a referrer is the top, which is locked, so the
two transactions serialise and the second one sees the first's edge. NO KEY UPDATE is enough to
serialise referral writers and does not block inserts of sessions that reference the players.

The link's `created_at` is taken after those locks. A session of the referee that finishes while
the link is uncommitted is handled by the tier-1 receiver: seeing no link, it locks the player
FOR SHARE (which waits for this transaction) and looks again, so a session finished at or after
`created_at` always gets its reward.
"""

from __future__ import annotations

import datetime as dt

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from games.models import Player
from referrals.models import Referral

_CHAIN_UP = """
WITH RECURSIVE chain(player_id, depth) AS (
    SELECT %s::bigint, 0
    UNION
    SELECT r.referrer_id, c.depth + 1
    FROM referrals_referral r JOIN chain c ON r.referee_id = c.player_id
    WHERE c.depth < %s
)
SELECT player_id FROM chain ORDER BY depth
"""

# Far above any real chain; only bounds the walk should the data ever hold a cycle.
MAX_CHAIN = 10_000


class ReferralError(ValueError):
    """A referral that would break the graph's rules; the message says which rule and why."""


def referral_chain_ids(*, player_id: int, depth: int = MAX_CHAIN) -> list[int]:
    """`player_id` and its referrers upwards, nearest first: [player, tier 1, tier 2, ...]."""
    with connection.cursor() as cursor:
        cursor.execute(_CHAIN_UP, [player_id, depth])
        return [row[0] for row in cursor.fetchall()]


def referral_create(
    *, referrer_id: int, referee_id: int, now: dt.datetime | None = None
) -> Referral:
    """Record that `referrer_id` referred `referee_id`; refuses with ReferralError when

    - the two are the same player (self-referral; also a database constraint),
    - either player does not exist,
    - the referee already has a referrer (set once; also a unique constraint),
    - the referrer is the referee or below it in the graph (the edge would close a cycle).

    `now` is when the link starts to count: sessions the referee finishes from then on qualify.
    """
    if referrer_id == referee_id:
        raise ReferralError(f"player {referee_id} cannot refer themselves")
    with transaction.atomic():
        locked: set[int] = set()
        while True:
            chain = referral_chain_ids(player_id=referrer_id)
            wanted = (set(chain) | {referee_id}) - locked
            if not wanted:
                break
            found = set(
                Player.objects.select_for_update(no_key=True)
                .filter(pk__in=wanted)
                .order_by("pk")
                .values_list("pk", flat=True)
            )
            for player_id in (referrer_id, referee_id):
                if player_id in wanted and player_id not in found:
                    raise ReferralError(f"player {player_id} does not exist")
            locked |= wanted
        existing = Referral.objects.filter(referee_id=referee_id).first()
        if existing is not None:
            raise ReferralError(
                f"player {referee_id} already has referrer {existing.referrer_id}; "
                "a referrer is set once"
            )
        if referee_id in chain:
            path = " -> ".join(str(p) for p in chain[: chain.index(referee_id) + 1])
            raise ReferralError(
                f"player {referrer_id} cannot refer player {referee_id}: {referee_id} is already "
                f"above {referrer_id} in the referral chain ({path}); it would make a cycle"
            )
        # The moment is taken now that the referee is locked, not when the call began: a
        # session finishing from here on waits for this commit (the tier-1 receiver locks the
        # player FOR SHARE when it sees no link) and then sees the link; one that finished
        # before this moment does not qualify, as it should.
        created_at = now or timezone.now()
        try:
            with transaction.atomic():
                return Referral.objects.create(
                    referrer_id=referrer_id, referee_id=referee_id, created_at=created_at
                )
        except IntegrityError as exc:  # pragma: no cover - the locks above make this unreachable
            raise ReferralError(f"referral {referrer_id} -> {referee_id} refused: {exc}") from exc
