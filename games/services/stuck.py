"""stuck-session-finisher: close sessions that reported a score but never sent "finish"."""

from __future__ import annotations

import datetime as dt
import operator
from functools import reduce

from django.db.models import Q

from games import conf
from games.models import GameSession
from games.services.sessions import SessionStateError, game_session_finish


def stuck_session_finish(*, now: dt.datetime) -> dict[str, int]:
    """Finish, with their last reported score, active sessions that reported a score and started
    longer ago than their game's maximum duration (GAMES_MAX_DURATION_<GAME> minutes).

    Each goes through `game_session_finish` (its own transaction: boards, pools, signal), with
    finished_at = `now`, so it counts in the period that is open now and never in a pool that
    may already be finalised. At most GAMES_STUCK_BATCH_SIZE per run; a session the player
    finishes meanwhile is left alone (the service re-checks under the row lock).
    """
    settings = conf.load()
    overdue = reduce(
        operator.or_,
        (
            Q(game=game, started_at__lt=now - dt.timedelta(minutes=minutes))
            for game, minutes in settings.max_duration_minutes.items()
        ),
    )
    ids = list(
        GameSession.objects.filter(overdue, status=GameSession.Status.ACTIVE)
        .filter(last_score_at__isnull=False)
        .order_by("started_at", "id")
        .values_list("id", flat=True)[: settings.stuck_batch_size]
    )
    counts = {"finished": 0, "raced": 0}
    for session_id in ids:
        try:
            session = game_session_finish(session_id=session_id, now=now)
        except SessionStateError:
            counts["raced"] += 1
            continue
        counts["finished" if session.finished_at == now else "raced"] += 1
    return counts
