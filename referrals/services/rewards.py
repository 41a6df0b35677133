"""Referral rewards: tier 1 with the event, tiers 2 and 3 by the every-minute jobs.

Qualifying event: a finished session with an entry fee above zero whose player had a referrer
when the session finished (the link's `created_at` <= `finished_at`). Tier N's beneficiary is the
player N links up that chain, each link counting only if it existed when the session finished, so
the rewards of an event depend on the data alone, not on when a job happened to run.

Rounding rule, one for every reward (the platform's rule, `games.money`): the reward is
`entry_fee x rate`, computed exactly, then quantised to 0.01 with ROUND_HALF_EVEN (a half cent goes
to the even cent). Each reward is rounded once, on its own; tiers never round from each other.
For example, at 10 %: 0.15 -> 0.015 -> 0.02; 0.25 -> 0.025 -> 0.02; 0.05 -> 0.005 -> 0.00. A
reward that rounds to 0.00 is not created. SQL uses `referrals_money_round()` (migration 0002),
which rounds the same way; the tests compare the two.

Tier 1 is written by the `session_finished` receiver inside the session-finishing transaction
(or, for sessions written without the signal, by `referral_tier1_backfill`, which also writes
their tiers 2 and 3: they are older than the tier jobs' cursor).
Tiers 2 and 3 are derived from tier-1 rewards (which exist for exactly the qualifying events, and
since rates do not grow with the tier, a tier-1 reward that rounded to zero means the higher tiers
would too). Each run reads tier-1 rewards in bounded batches by (event_at, id) from a cursor,
minus REFERRAL_TIER_LAG_SECONDS so that a finishing transaction that committed late is still
seen, and inserts with INSERT ... SELECT ... ON CONFLICT (session, tier) DO NOTHING: two runs at
once, or a run repeated for the same slot, create nothing twice. One batch is one transaction.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.db import connection, transaction

from games.models import GameSession
from games.money import ZERO, to_money
from referrals import conf
from referrals.models import Referral, ReferralReward, RewardStatus
from scheduler.locks import fence_check

# Before any reward: the cursor's starting point when a tier has never run.
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def reward_amount(base: Decimal, rate: Decimal) -> Decimal:
    """`base x rate` rounded half-even to 0.01 (the module's rounding rule)."""
    return to_money(base * rate)


def referral_reward_create_tier1(*, session: GameSession) -> ReferralReward | None:
    """The tier-1 reward of a finished session, created once; None when it does not qualify.

    Called inside the session-finishing transaction (the `session_finished` receiver), so the
    reward commits or rolls back with the finish. Calling it again changes nothing.
    """
    if (
        session.status != GameSession.Status.FINISHED
        or session.finished_at is None
        or session.entry_fee <= ZERO
    ):
        return None
    referrer_id = _referrer_at(session)
    if referrer_id is None:
        # A `referral_create` for this player may be between taking its `created_at` and
        # committing (it holds the player FOR NO KEY UPDATE meanwhile). FOR SHARE waits for it to
        # end; the fresh statement after it (READ COMMITTED) sees its link. Only sessions of
        # players without a visible link pay for this lock.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT 1 FROM games_player WHERE id = %s FOR SHARE", [session.player_id]
            )
        referrer_id = _referrer_at(session)
        if referrer_id is None:
            return None
    rate = conf.load().rates[1]
    amount = reward_amount(session.entry_fee, rate)
    if amount <= ZERO:
        return None
    reward = ReferralReward(
        session_id=session.pk,
        tier=1,
        beneficiary_id=referrer_id,
        event_at=session.finished_at,
        base_amount=session.entry_fee,
        rate=rate,
        amount=amount,
        status=RewardStatus.PENDING,
        created_at=session.finished_at,
    )
    created = ReferralReward.objects.bulk_create([reward], ignore_conflicts=True)
    return created[0] if created[0].pk is not None else None


def _referrer_at(session: GameSession) -> int | None:
    """The session player's referrer if the link existed when the session finished."""
    return (
        Referral.objects.filter(referee_id=session.player_id, created_at__lte=session.finished_at)
        .values_list("referrer_id", flat=True)
        .first()
    )


_TIER1_BACKFILL = """
INSERT INTO referrals_referralreward
    (session_id, tier, beneficiary_id, event_at, base_amount, rate, amount, status, created_at)
SELECT s.id, 1, l1.referrer_id, s.finished_at, s.entry_fee, %(rate)s,
       referrals_money_round(s.entry_fee * %(rate)s), 'pending', s.finished_at
FROM games_gamesession s
JOIN referrals_referral l1 ON l1.referee_id = s.player_id AND l1.created_at <= s.finished_at
WHERE s.status = 'finished' AND s.entry_fee > 0 AND s.finished_at <= %(now)s
  AND l1.referee_id = ANY(%(players)s)
  AND referrals_money_round(s.entry_fee * %(rate)s) > 0
ORDER BY s.id
ON CONFLICT (session_id, tier) DO NOTHING
"""


def _backfill_upper_sql(tier: int) -> str:
    joins, beneficiary = _UPPER_LINKS[tier]
    return f"""
    INSERT INTO referrals_referralreward
        (session_id, tier, beneficiary_id, event_at, base_amount, rate, amount, status,
         created_at)
    SELECT b.session_id, {tier}, {beneficiary}, b.event_at, b.base_amount, %(rate)s,
           referrals_money_round(b.base_amount * %(rate)s), 'pending', %(now)s
    FROM referrals_referralreward b
    JOIN games_gamesession s ON s.id = b.session_id {joins}
    WHERE b.tier = 1 AND s.player_id = ANY(%(players)s) AND b.event_at <= %(now)s
      AND referrals_money_round(b.base_amount * %(rate)s) > 0
    ORDER BY b.session_id
    ON CONFLICT (session_id, tier) DO NOTHING
    """  # noqa: S608 -- tier and joins come from the constant table, never from input


def referral_tier1_backfill(*, players: list[int], now: dt.datetime) -> int:
    """Rewards for qualifying sessions of `players` that were written without the
    `session_finished` signal (bulk imports, the demo seeder's COPY); returns how many tier-1
    rewards were created. The same rule as the receiver; existing rewards are left alone.

    It also creates their tier-2 and tier-3 rewards, in the same transaction and by the same rule
    as the tier jobs: those jobs read tier-1 rewards from their cursor on (minus the look-back),
    and backfilled events are usually older than that, so the jobs would never see them. Tiers
    2 and 3 are written for every tier-1 reward of the players' sessions, so running the backfill
    again also completes events an earlier backfill left without them; ON CONFLICT makes it
    harmless next to a tier job doing the same."""
    settings = conf.load()
    rate = settings.rates[1]
    if rate <= ZERO or not players:
        return 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_TIER1_BACKFILL, {"rate": rate, "now": now, "players": players})
        created = cursor.rowcount
        for tier in _UPPER_LINKS:
            if settings.rates[tier] > ZERO:
                cursor.execute(
                    _backfill_upper_sql(tier),
                    {"rate": settings.rates[tier], "now": now, "players": players},
                )
        return created


def on_session_finished(sender: Any, *, session: GameSession, **kwargs: Any) -> None:
    """`games.signals.session_finished` receiver (connected in ReferralsConfig.ready)."""
    referral_reward_create_tier1(session=session)


# The links above the tier-1 beneficiary: tier 2 needs one more, tier 3 two more, each existing
# when the session finished.
_UPPER_LINKS = {
    2: (
        "JOIN referrals_referral l2 ON l2.referee_id = b.beneficiary_id "
        "AND l2.created_at <= b.event_at",
        "l2.referrer_id",
    ),
    3: (
        "JOIN referrals_referral l2 ON l2.referee_id = b.beneficiary_id "
        "AND l2.created_at <= b.event_at "
        "JOIN referrals_referral l3 ON l3.referee_id = l2.referrer_id "
        "AND l3.created_at <= b.event_at",
        "l3.referrer_id",
    ),
}


def _tier_batch_sql(tier: int) -> str:
    joins, beneficiary = _UPPER_LINKS[tier]
    # MATERIALIZED: the batch is evaluated once, so LIMIT bounds the work and the last key is
    # the key of what was actually read.
    return f"""
    WITH batch AS MATERIALIZED (
        SELECT t1.id, t1.session_id, t1.beneficiary_id, t1.event_at, t1.base_amount
        FROM referrals_referralreward t1
        WHERE t1.tier = 1
          AND (t1.event_at, t1.id) > (%(after_at)s, %(after_id)s)
          AND t1.event_at <= %(now)s
        ORDER BY t1.event_at, t1.id
        LIMIT %(limit)s
    ), inserted AS (
        INSERT INTO referrals_referralreward
            (session_id, tier, beneficiary_id, event_at, base_amount, rate, amount, status,
             created_at)
        SELECT b.session_id, {tier}, {beneficiary}, b.event_at, b.base_amount, %(rate)s,
               referrals_money_round(b.base_amount * %(rate)s), 'pending', %(now)s
        FROM batch b {joins}
        WHERE referrals_money_round(b.base_amount * %(rate)s) > 0
        ORDER BY b.session_id  -- one insertion order for every run: concurrent runs never deadlock
        ON CONFLICT (session_id, tier) DO NOTHING
        RETURNING 1
    ), last AS (
        SELECT event_at, id FROM batch ORDER BY event_at DESC, id DESC LIMIT 1
    )
    SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM batch),
           (SELECT event_at FROM last), (SELECT id FROM last)
    """  # noqa: S608 -- tier and joins come from the constant table above, never from input


_ADVANCE = """
INSERT INTO referrals_tierprogress (tier, scanned_through) VALUES (%s, %s)
ON CONFLICT (tier) DO UPDATE
SET scanned_through = GREATEST(referrals_tierprogress.scanned_through, EXCLUDED.scanned_through)
"""


def referral_tier_create(*, tier: int, now: dt.datetime) -> dict[str, int]:
    """Create the missing tier-`tier` rewards of events that finished by `now`; returns counts."""
    if tier not in _UPPER_LINKS:
        raise ValueError(f"tier {tier} is not created by a job; tiers 2 and 3 are")
    settings = conf.load()
    rate = settings.rates[tier]
    counts = {"created": 0, "scanned": 0, "batches": 0}
    if rate <= ZERO:
        return counts
    with connection.cursor() as cursor:
        cursor.execute("SELECT scanned_through FROM referrals_tierprogress WHERE tier = %s", [tier])
        row = cursor.fetchone()
    start = EPOCH if row is None else row[0] - dt.timedelta(seconds=settings.tier_lag_seconds)
    after_at, after_id = start, 0
    sql = _tier_batch_sql(tier)
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            # Fencing: a stale run (its lease expired) neither creates rewards nor moves the
            # progress cursor; the lease row stays locked FOR SHARE until the batch commits.
            fence_check()
            cursor.execute(
                sql,
                {
                    "after_at": after_at,
                    "after_id": after_id,
                    "now": now,
                    "limit": settings.tier_batch_size,
                    "rate": rate,
                },
            )
            created, scanned, last_at, last_id = cursor.fetchone()
            counts["batches"] += 1
            counts["created"] += created
            counts["scanned"] += scanned
            done = scanned < settings.tier_batch_size
            # Progress is saved with each batch, so a run killed half-way resumes near there.
            cursor.execute(_ADVANCE, [tier, now if done else last_at])
        if done:
            return counts
        after_at, after_id = last_at, last_id


def referral_tier2_create(*, now: dt.datetime) -> dict[str, int]:
    """Job `referral-tier2`: tier-2 rewards for events that do not have them yet."""
    return referral_tier_create(tier=2, now=now)


def referral_tier3_create(*, now: dt.datetime) -> dict[str, int]:
    """Job `referral-tier3`: tier-3 rewards for events that do not have them yet."""
    return referral_tier_create(tier=3, now=now)
