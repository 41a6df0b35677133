"""Predictions: players guess who wins a pool (`prediction_place`); prediction-matcher settles
them once the pool is closed, each exactly once (`prediction_match`)."""

from __future__ import annotations

import datetime as dt

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from games.models import Notification, Player, Prediction, PrizePool
from games.periods import period_end
from games.services.failures import row_failure_record, row_failures, row_failures_clear
from scheduler.budget import Budget
from scheduler.errors import RUN_INTERRUPTS

JOB = "prediction-matcher"

CORRECT_POINTS = 10

# One statement per pool: only `pending` rows change, so a rerun or a concurrent run (which waits
# on the row locks and then re-checks `pending`) settles nothing twice.
_SETTLE_SQL = f"""
WITH settled AS (
    UPDATE {Prediction._meta.db_table} p
    SET outcome = CASE WHEN pool.status = 'no_winner' THEN 'void'
                       WHEN p.predicted_winner_id = pool.winner_id THEN 'correct'
                       ELSE 'wrong' END,
        points = CASE WHEN pool.status = 'finalised' AND p.predicted_winner_id = pool.winner_id
                      THEN %(points)s ELSE 0 END,
        settled_at = %(now)s
    FROM {PrizePool._meta.db_table} pool
    WHERE p.pool_id = %(pool)s AND pool.id = %(pool)s AND p.outcome = 'pending'
      AND pool.status <> 'open'
    RETURNING p.id, p.player_id, p.outcome
),
notified AS (
    INSERT INTO {Notification._meta.db_table}
        (player_id, kind, title, body, dedupe_key, status, due_at, next_attempt_at, attempts,
         last_error, delivered_at, created_at)
    SELECT player_id, 'prediction', 'Your prediction was right!',
           'You earned ' || %(points)s || ' points.', 'prediction:' || id, 'pending',
           %(now)s, %(now)s, 0, '', NULL, %(now)s
    FROM settled WHERE outcome = 'correct'
    ON CONFLICT DO NOTHING
)
SELECT outcome, count(*) FROM settled GROUP BY outcome
"""  # noqa: S608


def prediction_match(*, now: dt.datetime, budget: Budget | None = None) -> dict[str, int]:
    """Settle pending predictions of closed (finalised or no-winner) pools, one pool per
    statement and transaction, oldest pool first; counts per outcome.

    A pool whose statement raises (anything) settles nothing this run and is recorded in
    `RowFailure` (`failed`); recorded pools are settled after the others and left for staff at
    GAMES_ROW_MAX_ATTEMPTS (`parked`). The run stops between pools when `budget` is spent;
    `backlog`: pending predictions of closed pools still unsettled after the run, parked pools
    excepted (exact, from the partial index of pending predictions).
    """
    budget = budget or Budget.unlimited()
    failing = row_failures(job=JOB)
    unsettled = Prediction.objects.filter(outcome=Prediction.Outcome.PENDING).exclude(
        pool__status=PrizePool.Status.OPEN
    )
    pools = list(unsettled.order_by("pool_id").values_list("pool_id", flat=True).distinct())
    row_failures_clear(job=JOB, row_ids=set(failing.skip) - set(pools))  # settled meanwhile
    turn = [pool for pool in pools if pool not in failing.skip]
    turn += [pool for pool in failing.retry if pool in pools]
    counts = {"correct": 0, "wrong": 0, "void": 0, "failed": 0}
    for pool_id in turn:
        if budget.spent:
            break
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(_SETTLE_SQL, {"now": now, "points": CORRECT_POINTS, "pool": pool_id})
                settled = cursor.fetchall()
        except RUN_INTERRUPTS:
            raise
        except Exception as exc:  # one pool's failure is that pool's, not the run's
            row_failure_record(job=JOB, row_id=pool_id, exc=exc, now=now)
            counts["failed"] += 1
            continue
        if pool_id in failing.retry:
            row_failures_clear(job=JOB, row_ids=[pool_id])
        for outcome, count in settled:
            counts[outcome] += count
    parked = [pool for pool in failing.parked if pool in pools]
    counts["parked"] = len(parked)
    counts["backlog"] = unsettled.exclude(pool_id__in=parked).count()
    return counts


class PredictionError(ValueError):
    """The prediction cannot be placed; the message says why."""


def prediction_place(
    *,
    player_id: int,
    pool_id: int,
    predicted_winner_id: int,
    now: dt.datetime | None = None,
) -> Prediction:
    """`player_id` predicts that `predicted_winner_id` wins pool `pool_id`.

    Accepted only while the pool is open and its period has not ended at `now` (predictions close
    when the day or ISO week ends, before finalisation reads the board), for existing players,
    once per player and pool (database constraint `prediction_one_per_pool`; a second attempt,
    even a concurrent one, is refused). A player may predict themselves. Anything else raises
    PredictionError naming the reason; nothing is written then.

    The pool row is read FOR SHARE: finalisation (FOR UPDATE) waits for this transaction, or this
    one waits for finalisation and then sees the pool closed, so no prediction is ever added to a
    pool after it was settled.
    """
    now = now or timezone.now()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT status, period, period_start FROM {PrizePool._meta.db_table} "  # noqa: S608
                "WHERE id = %s FOR SHARE",
                [pool_id],
            )
            row = cursor.fetchone()
        if row is None:
            raise PredictionError(f"pool {pool_id} does not exist")
        status, period, start = row
        if status != PrizePool.Status.OPEN:
            raise PredictionError(f"pool {pool_id} is closed ({status}); it takes no predictions")
        ends = period_end(period, start)
        if now >= ends:
            raise PredictionError(
                f"pool {pool_id}'s {period} period ended at {ends:%Y-%m-%d %H:%M} UTC; "
                "predictions close when the period ends"
            )
        found = set(
            Player.objects.filter(pk__in=[player_id, predicted_winner_id]).values_list(
                "pk", flat=True
            )
        )
        for role, pk in (("player", player_id), ("predicted winner", predicted_winner_id)):
            if pk not in found:
                raise PredictionError(f"{role} {pk} does not exist")
        try:
            with transaction.atomic():  # a savepoint: the duplicate's error is ours to report
                return Prediction.objects.create(
                    player_id=player_id,
                    pool_id=pool_id,
                    predicted_winner_id=predicted_winner_id,
                    created_at=now,
                )
        except IntegrityError as exc:
            if Prediction.objects.filter(player_id=player_id, pool_id=pool_id).exists():
                raise PredictionError(
                    f"player {player_id} already predicted pool {pool_id}; one prediction per "
                    "player and pool"
                ) from exc
            raise
