"""Prize pools: entry-fee shares in, finalisation out (winner, final ranks, credit, rollover).

Money safety does not rest on the job lock: every change to a pool happens in a transaction that
holds the pool row (SELECT ... FOR UPDATE) and re-checks its status, and the credit is unique per
pool in the database. Two finalisers at once therefore serialise on the row; the second one finds
the pool closed and does nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal

from django.db import connection, transaction

from games.models import PoolPeriod, PrizeCredit, PrizePool
from games.money import ZERO, to_money
from games.periods import period_end, period_length, utc_date
from games.services.boards import ENTRY_TABLE, SESSION_TABLE, board_has_unranked, boards_rank
from games.services.failures import row_failure_record, row_failures_clear
from games.services.notifications import notification_enqueue
from scheduler.errors import RUN_INTERRUPTS
from scheduler.locks import fence_check

JOB = "prize-pool-finalisation"
logger = logging.getLogger(__name__)


def prize_pool_lock(
    *, game: str, period: str, period_start: dt.date, create: bool = True
) -> PrizePool | None:
    """The pool row, locked FOR UPDATE until the transaction ends; created on demand.

    A missing pool is created with INSERT ... ON CONFLICT DO NOTHING, so two creators never
    collide on the unique key; an existing one (the common case: every finish of the day after
    the first) costs one query. Must run inside a transaction.
    """
    pools = PrizePool.objects.select_for_update().filter(
        game=game, period=period, period_start=period_start
    )
    pool = pools.first()
    if pool is None and create:
        PrizePool.objects.bulk_create(
            [PrizePool(game=game, period=period, period_start=period_start)],
            ignore_conflicts=True,
        )
        pool = pools.first()
    return pool


_ADD_TO_OPEN = f"""
UPDATE {PrizePool._meta.db_table}
SET amount = amount + %(amount)s, carried_in = carried_in + %(carried)s
WHERE game = %(game)s AND period = %(period)s AND period_start = %(start)s
  AND status = '{PrizePool.Status.OPEN}'
RETURNING *
"""  # noqa: S608 -- table name and status are ours, values are parameters


def prize_pool_add(
    *, game: str, period: str, period_start: dt.date, amount: Decimal, carried: bool = False
) -> PrizePool:
    """Add `amount` to the open pool of that period, or of the first later period still open.

    A pool already closed (its period ended and was finalised) takes no more money: the amount goes
    forward, like a rollover, instead of changing a paid-out pool. Must run inside a transaction.
    """
    amount = to_money(amount)
    # The common case in one statement: the period's pool exists and is open. The UPDATE locks
    # the row and re-checks `open` on its latest version (a finaliser that closed it first makes
    # it match nothing), so it is the lock-then-add below in one round trip.
    params = {
        "amount": amount,
        "carried": amount if carried else ZERO,
        "game": game,
        "period": period,
        "start": period_start,
    }
    for pool in PrizePool.objects.raw(_ADD_TO_OPEN, params):
        return pool
    start = period_start
    step = period_length(period)
    while True:
        pool = prize_pool_lock(game=game, period=period, period_start=start)
        assert pool is not None  # created above
        if pool.status == PrizePool.Status.OPEN:
            break
        start += step
    pool.amount += amount
    if carried:
        pool.carried_in += amount
    pool.save(update_fields=["amount", "carried_in"])
    return pool


def prize_pool_finalise(*, pool_id: int, now: dt.datetime) -> str:
    """Close one pool whose period has ended: "finalised", "no_winner", or "skipped".

    In one transaction holding the pool row: the winner is the top of the matching board in rank
    order (score desc, achieved_at, id), read at this moment, among entries whose session is not
    voided (entries of voided sessions are removed from the board first); the board's final ranks
    are written (only if it changed since the hourly ranking; an unchanged board already holds
    them, and reading it for an unranked entry costs a fraction of ranking it: measured at 1M
    entries on a Monday after an hour of play, ten pools ~0.5 s of database time when
    leaderboard-ranking ran at 00:00:20, ~7.6 s when it did not); the winner gets one
    PrizeCredit (unique per pool) when the amount is positive and a notification. A pool
    without entries becomes `no_winner` and its amount moves to the next open pool of the same
    game and period. A pool that is closed already, or whose period has not
    ended at `now`, is "skipped" and left untouched.
    """
    with transaction.atomic():
        # Fencing: a job run frozen past its lease TTL must not credit a winner; the lease row
        # stays locked FOR SHARE until this pool's transaction commits (no-op outside a job run).
        fence_check()
        pool = PrizePool.objects.select_for_update().get(pk=pool_id)
        if pool.status != PrizePool.Status.OPEN:
            return "skipped"
        if period_end(pool.period, pool.period_start) > now:
            return "skipped"
        board = (pool.game, pool.period, pool.period_start)
        with connection.cursor() as cursor:
            # A voided session never counts: entries a void left behind (one made behind the void
            # service's back; the service itself rebuilds them under this pool's lock) leave the
            # board before its final ranks are written.
            cursor.execute(
                f"DELETE FROM {ENTRY_TABLE} e USING {SESSION_TABLE} s "  # noqa: S608
                "WHERE e.session_id = s.id AND s.voided_at IS NOT NULL "
                "AND e.game = %s AND e.period = %s AND e.period_start = %s",
                list(board),
            )
            # Lowest-cost exact winner: one index probe on entry_board_order, whatever rank says;
            # entries of voided sessions are excluded here too.
            cursor.execute(
                f"SELECT e.player_id, e.score FROM {ENTRY_TABLE} e "  # noqa: S608
                "WHERE e.game = %s AND e.period = %s AND e.period_start = %s "
                f"AND NOT EXISTS (SELECT 1 FROM {SESSION_TABLE} s "
                "WHERE s.id = e.session_id AND s.voided_at IS NOT NULL) "
                "ORDER BY e.score DESC, e.achieved_at ASC, e.id ASC LIMIT 1",
                list(board),
            )
            top = cursor.fetchone()
        if top is None:
            carried = pool.amount
            pool.status = PrizePool.Status.NO_WINNER
            pool.finalised_at = now
            pool.save(update_fields=["status", "finalised_at"])
            if carried > ZERO:
                # The amount stays on this pool as its record; the next pool receives a copy of
                # it as `carried_in`. Settlement pays only credits, so nothing is counted twice.
                prize_pool_add(
                    game=pool.game,
                    period=pool.period,
                    period_start=pool.period_start + period_length(pool.period),
                    amount=carried,
                    carried=True,
                )
            return "no_winner"
        winner_id, winning_score = top
        # The final ranks: ranks are exact unless the board changed since it was last ranked
        # (an entry with rank NULL, marked by the database in the writing transaction; every
        # writer of this board holds this pool's row first, and cleanup marks the boards of open
        # pools). An unchanged board is left as the ranking wrote it: leaderboard-ranking at
        # 00:00:20 ranks the ended boards of open pools holding their rows, so at 00:00:50 the
        # board is normally unchanged (this wait for the row, if that run is still going, is
        # what makes it so). If that run did not happen or skipped the board, it is ranked here.
        if board_has_unranked(board):
            boards_rank([board])
        pool.status = PrizePool.Status.FINALISED
        pool.winner_id = winner_id
        pool.winning_score = winning_score
        pool.finalised_at = now
        pool.save(update_fields=["status", "winner", "winning_score", "finalised_at"])
        if pool.amount > ZERO:
            PrizeCredit.objects.create(
                pool=pool, player_id=winner_id, amount=pool.amount, created_at=now
            )
        label = "daily" if pool.period == PoolPeriod.DAILY else "weekly"
        notification_enqueue(
            player_id=winner_id,
            kind="pool_won",
            title=f"You won the {label} {pool.get_game_display()} pool!",
            body=f"Score {winning_score} won {pool.amount} for {pool.period_start:%Y-%m-%d}.",
            dedupe_key=f"pool-won:{pool.pk}",
            due_at=now,
        )
        return "finalised"


def prize_pool_finalise_due(*, now: dt.datetime) -> dict[str, int]:
    """Finalise every open pool whose period ended by `now` (the job at 00:00 UTC).

    On schedule that is each daily pool of the day before `now`'s date and, when `now` is a Monday,
    each weekly pool of the ISO week that just ended. Pools a missed run left open are caught up
    too (oldest first, so a rollover lands in a pool that is finalised after it). A pool of a
    period that has not ended is never selected. One transaction per pool keeps locks short.

    A rollover may create the next pool for a period that has ended too (a catch-up over missed
    days): the due list is read again after each pass, so such a pool is closed in this run and
    the amount reaches the open pool now, not a day later. Each pool is tried once per run.

    A pool that raises is rolled back alone and recorded in `RowFailure`; the other pools are
    finalised (a later pool of the same game and period too: a rollover always moves forward to
    the first open pool, so no money is lost by the order). Then the run raises the first error,
    so it is recorded failed and retried by the job's policy (a deadlock in 30 s), and the pool
    is retried every run until it succeeds; there is no attempt limit on money. Celery's soft
    limit and a lost lease end the run at once.
    """
    today = utc_date(now)
    counts = {"finalised": 0, "no_winner": 0, "skipped": 0}
    tried: set[int] = set()
    errors: list[Exception] = []
    while True:
        due = [
            pool_id
            for pool_id, period, start in PrizePool.objects.filter(
                status=PrizePool.Status.OPEN, period_start__lt=today
            )
            .exclude(pk__in=tried)
            .order_by("period_start", "period", "game")
            .values_list("id", "period", "period_start")
            if period_end(period, start) <= now
        ]
        if not due:
            break
        for pool_id in due:
            try:
                outcome = prize_pool_finalise(pool_id=pool_id, now=now)
            except RUN_INTERRUPTS:
                raise
            except Exception as exc:  # this pool's failure must not keep the others open
                row_failure_record(job=JOB, row_id=pool_id, exc=exc, now=now)
                errors.append(exc)
                continue
            counts[outcome] += 1
            row_failures_clear(job=JOB, row_ids=[pool_id])
        tried.update(due)
    counts["due"] = len(tried)
    if errors:
        logger.error("prize pools finalised except %d failed: %s", len(errors), counts)
        raise errors[0]
    return counts
