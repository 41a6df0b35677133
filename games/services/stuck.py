"""stuck-session-finisher: close sessions that reported a score but never sent "finish"."""

from __future__ import annotations

import datetime as dt
import operator
from functools import reduce

from django.db.models import Q, QuerySet

from games import conf
from games.models import GameSession
from games.services.failures import row_failure_record, row_failures, row_failures_clear
from games.services.sessions import SessionStateError, game_session_finish
from scheduler.budget import Budget
from scheduler.errors import RUN_INTERRUPTS

JOB = "stuck-session-finisher"


def stuck_sessions(now: dt.datetime) -> QuerySet[GameSession]:
    """Active sessions that reported a score and started longer ago than their game's maximum
    duration (GAMES_MAX_DURATION_<GAME> minutes), oldest first."""
    settings = conf.load()
    overdue = reduce(
        operator.or_,
        (
            Q(game=game, started_at__lt=now - dt.timedelta(minutes=minutes))
            for game, minutes in settings.max_duration_minutes.items()
        ),
    )
    return GameSession.objects.filter(
        overdue, status=GameSession.Status.ACTIVE, last_score_at__isnull=False
    ).order_by("started_at", "id")


def stuck_session_finish(*, now: dt.datetime, budget: Budget | None = None) -> dict[str, int]:
    """Finish stuck sessions (`stuck_sessions`) with their last reported score.

    Each goes through `game_session_finish` (its own transaction: boards, pools, signal), with
    finished_at = `now`, so it counts in the period that is open now and never in a pool that
    may already be finalised; a session the player finishes meanwhile is left alone (the service
    re-checks under the row lock) and counted as `raced`.

    A session that raises anything else is rolled back alone and recorded in `RowFailure`
    (`failed`); sessions without a failure record go first, in age order, then recorded ones
    below GAMES_ROW_MAX_ATTEMPTS; those at the limit stay active for staff (`parked`).
    Ids are read GAMES_STUCK_BATCH_SIZE at a time; the run stops starting sessions when
    `budget` is spent. `backlog`: stuck sessions still active and not parked after the run
    (exact; sessions that failed this run count until they are parked).
    """
    budget = budget or Budget.unlimited()
    size = conf.load().stuck_batch_size
    failing = row_failures(job=JOB)
    stuck = stuck_sessions(now)
    counts = {"finished": 0, "raced": 0, "failed": 0}

    def finish(session_id: int) -> None:
        try:
            session = game_session_finish(session_id=session_id, now=now)
        except SessionStateError:
            counts["raced"] += 1
            return
        except RUN_INTERRUPTS:
            raise
        except Exception as exc:  # any failure of one session is that session's, not the run's
            row_failure_record(job=JOB, row_id=session_id, exc=exc, now=now)
            counts["failed"] += 1
            return
        counts["finished" if session.finished_at == now else "raced"] += 1

    # Healthy sessions in keyset order (a batch never re-reads the sessions before it).
    healthy = stuck.exclude(pk__in=failing.skip)
    after: tuple[dt.datetime, int] | None = None
    while not budget.spent:
        page = healthy
        if after is not None:
            page = page.filter(Q(started_at__gt=after[0]) | Q(started_at=after[0], id__gt=after[1]))
        keys = list(page.values_list("started_at", "id")[:size])
        for started_at, session_id in keys:
            if budget.spent:
                break
            finish(session_id)
            after = (started_at, session_id)
        if len(keys) < size:
            break
    # Then the ones that failed before; a record whose session no longer needs us is dropped.
    retry = set(stuck.filter(pk__in=failing.retry).values_list("id", flat=True))
    for session_id in failing.retry:
        if budget.spent:
            break
        if session_id in retry:
            failed_before = counts["failed"]
            finish(session_id)
            if counts["failed"] > failed_before:
                continue
        row_failures_clear(job=JOB, row_ids=[session_id])
    parked = set(stuck.filter(pk__in=failing.parked).values_list("id", flat=True))
    row_failures_clear(job=JOB, row_ids=set(failing.parked) - parked)
    counts["parked"] = len(parked)
    counts["backlog"] = stuck.exclude(pk__in=failing.parked).count()
    return counts
