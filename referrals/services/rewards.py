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
from referrals.models import FailedItem, Referral, ReferralReward, RewardStatus
from referrals.services.failures import (
    checks_per_statement,
    failed_items_clear,
    failed_items_due,
    failed_items_record,
    raise_unless_row_fault,
)
from scheduler.budget import Budget
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


def _tier_sql(tier: int, *, one: bool = False) -> str:
    """Insert the tier-`tier` rewards of one batch of tier-1 rewards (events) and return
    (created, scanned, last event_at, last id). The batch is the next REFERRAL_TIER_BATCH_SIZE
    events after the cursor, less those with a failure record (retried on their own), or with
    `one`, the single event `%(id)s` whatever its record (the per-row fallback and retries)."""
    joins, beneficiary = _UPPER_LINKS[tier]
    if one:
        batch = "t1.tier = 1 AND t1.id = %(id)s AND t1.event_at <= %(now)s"
        set_aside = ""
    else:
        batch = """t1.tier = 1
          AND (t1.event_at, t1.id) > (%(after_at)s, %(after_id)s)
          AND t1.event_at <= %(now)s
        ORDER BY t1.event_at, t1.id
        LIMIT %(limit)s"""
        set_aside = (
            "AND NOT EXISTS (SELECT 1 FROM referrals_faileditem f "
            "WHERE f.reward_id = b.id AND f.job = %(job)s)"
        )
    # MATERIALIZED: the batch is evaluated once, so LIMIT bounds the work and the last key is
    # the key of what was actually read.
    return f"""
    WITH batch AS MATERIALIZED (
        SELECT t1.id, t1.session_id, t1.beneficiary_id, t1.event_at, t1.base_amount
        FROM referrals_referralreward t1
        WHERE {batch}
    ), inserted AS (
        INSERT INTO referrals_referralreward
            (session_id, tier, beneficiary_id, event_at, base_amount, rate, amount, status,
             created_at)
        SELECT b.session_id, {tier}, {beneficiary}, b.event_at, b.base_amount, %(rate)s,
               referrals_money_round(b.base_amount * %(rate)s), 'pending', %(now)s
        FROM batch b {joins}
        WHERE referrals_money_round(b.base_amount * %(rate)s) > 0 {set_aside}
        ORDER BY b.session_id  -- one insertion order for every run: concurrent runs never deadlock
        ON CONFLICT (session_id, tier) DO NOTHING
        RETURNING 1
    ), last AS (
        SELECT event_at, id FROM batch ORDER BY event_at DESC, id DESC LIMIT 1
    )
    SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM batch),
           (SELECT event_at FROM last), (SELECT id FROM last)
    """  # noqa: S608 -- tier, joins and clauses come from constants above, never from input


_ADVANCE = """
INSERT INTO referrals_tierprogress (tier, scanned_through) VALUES (%s, %s)
ON CONFLICT (tier) DO UPDATE
SET scanned_through = GREATEST(referrals_tierprogress.scanned_through, EXCLUDED.scanned_through)
"""

_BATCH_KEYS = """
SELECT id, event_at FROM referrals_referralreward
WHERE tier = 1 AND (event_at, id) > (%(after_at)s, %(after_id)s) AND event_at <= %(now)s
ORDER BY event_at, id
LIMIT %(limit)s
"""

_BACKLOG = """
SELECT count(*) FROM referrals_referralreward
WHERE tier = 1 AND (event_at, id) > (%s, %s) AND event_at <= %s
"""


def _tier_one(
    cursor: Any, *, job: str, sql: str, params: dict[str, Any], event_id: int, counts: dict
) -> bool:
    """The event's tier-N reward in its own savepoint; a failure is recorded, not raised.
    Returns True when the event was processed (its reward exists or it earns none)."""
    try:
        with transaction.atomic():
            cursor.execute(sql, {**params, "id": event_id})
            counts["created"] += cursor.fetchone()[0]
        return True
    except Exception as exc:
        raise_unless_row_fault(exc)
        failed_items_record(job=job, rewards=[event_id], exc=exc, now=params["now"])
        counts["failed"] += 1
        return False


def referral_tier_create(
    *, tier: int, now: dt.datetime, budget: Budget | None = None
) -> dict[str, int]:
    """Create the missing tier-`tier` rewards of events that finished by `now`; returns counts.

    Batches are one set-based statement each. When a batch's statement fails, the batch is done
    again event by event, each in its own savepoint: an event that raises (whatever the error)
    is recorded as a `FailedItem` with its error and the rest of the batch commits. Recorded
    events are left out of later batches and retried after the scan, once their backoff ends;
    `held` counts the ones at their attempt limit, left for staff. The run stops starting
    batches when `budget` is spent; `backlog` is the number of events it left after its cursor.
    """
    if tier not in _UPPER_LINKS:
        raise ValueError(f"tier {tier} is not created by a job; tiers 2 and 3 are")
    budget = budget or Budget.unlimited()
    settings = conf.load()
    rate = settings.rates[tier]
    job = f"referral-tier{tier}"
    counts = {
        "created": 0,
        "scanned": 0,
        "batches": 0,
        "failed": 0,
        "retried": 0,
        "held": 0,
        "backlog": 0,
    }
    if rate <= ZERO:
        return counts
    with connection.cursor() as cursor:
        cursor.execute("SELECT scanned_through FROM referrals_tierprogress WHERE tier = %s", [tier])
        row = cursor.fetchone()
    start = EPOCH if row is None else row[0] - dt.timedelta(seconds=settings.tier_lag_seconds)
    after_at, after_id = start, 0
    batch_sql, one_sql = _tier_sql(tier), _tier_sql(tier, one=True)
    params: dict[str, Any] = {"now": now, "rate": rate, "job": job}
    while True:
        if budget.spent:
            with connection.cursor() as cursor:
                cursor.execute(_BACKLOG, [after_at, after_id, now])
                counts["backlog"] = cursor.fetchone()[0]
            break
        batch = {**params, "after_at": after_at, "after_id": after_id}
        batch["limit"] = settings.tier_batch_size
        with transaction.atomic(), connection.cursor() as cursor:
            # Fencing: a stale run (its lease expired) neither creates rewards nor moves the
            # progress cursor; the lease row stays locked FOR SHARE until the batch commits.
            fence_check()
            checks_per_statement()
            try:
                with transaction.atomic():
                    cursor.execute(batch_sql, batch)
                    created, scanned, last_at, last_id = cursor.fetchone()
                counts["created"] += created
                done = scanned < settings.tier_batch_size
            except Exception as exc:
                raise_unless_row_fault(exc)
                scanned, last_at, last_id, done = _tier_batch_row_by_row(
                    cursor, job=job, sql=one_sql, params=batch, budget=budget, counts=counts
                )
            counts["batches"] += 1
            counts["scanned"] += scanned
            # Progress is saved with each batch, so a run killed half-way resumes near there.
            if done or last_at is not None:
                cursor.execute(_ADVANCE, [tier, now if done else last_at])
        if done:
            # Set-aside events due again, after the healthy work.
            _tier_retry_due(job=job, sql=one_sql, params=params, budget=budget, counts=counts)
            break
        if last_at is not None:  # None: the budget ended before the batch's first event
            after_at, after_id = last_at, last_id
    counts["held"] = FailedItem.objects.filter(
        job=job, attempts__gte=settings.item_max_attempts
    ).count()
    return counts


def _tier_batch_row_by_row(
    cursor: Any, *, job: str, sql: str, params: dict[str, Any], budget: Budget, counts: dict
) -> tuple[int, dt.datetime | None, int | None, bool]:
    """The batch's set statement failed: the same events one by one. Returns (scanned, last
    event_at, last id, done); stops early (not done) when the budget is spent."""
    cursor.execute(_BATCH_KEYS, params)
    keys = cursor.fetchall()
    set_aside = set(
        FailedItem.objects.filter(job=job, reward_id__in=[k[0] for k in keys]).values_list(
            "reward_id", flat=True
        )
    )
    scanned, last_at, last_id = 0, None, None
    for event_id, event_at in keys:
        if budget.spent:
            return scanned, last_at, last_id, False
        if event_id not in set_aside:
            _tier_one(cursor, job=job, sql=sql, params=params, event_id=event_id, counts=counts)
        scanned, last_at, last_id = scanned + 1, event_at, event_id
    return scanned, last_at, last_id, len(keys) < params["limit"]


def _tier_retry_due(
    *, job: str, sql: str, params: dict[str, Any], budget: Budget, counts: dict
) -> None:
    """Events recorded as failed whose backoff ended, after the healthy work, each in its own
    short transaction; a success forgets the failure."""
    due = list(
        failed_items_due(job=job, now=params["now"]).values_list("reward_id", flat=True)[
            : conf.load().tier_batch_size
        ]
    )
    for event_id in due:
        if budget.spent:
            counts["backlog"] += 1
            continue
        with transaction.atomic(), connection.cursor() as cursor:
            fence_check()
            checks_per_statement()
            counts["retried"] += 1
            if _tier_one(cursor, job=job, sql=sql, params=params, event_id=event_id, counts=counts):
                failed_items_clear(job=job, rewards=[event_id])


def referral_tier2_create(*, now: dt.datetime, budget: Budget | None = None) -> dict[str, int]:
    """Job `referral-tier2`: tier-2 rewards for events that do not have them yet."""
    return referral_tier_create(tier=2, now=now, budget=budget)


def referral_tier3_create(*, now: dt.datetime, budget: Budget | None = None) -> dict[str, int]:
    """Job `referral-tier3`: tier-3 rewards for events that do not have them yet."""
    return referral_tier_create(tier=3, now=now, budget=budget)
