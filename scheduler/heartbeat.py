"""Beat's heartbeat: every tick of beat's loop stamps its `BeatHeartbeat` row, at most every
STAMP_EVERY seconds, so the stamp costs one single-row upsert per few seconds whatever the number
of schedules.

Beat ticks at least every `CELERY_BEAT_MAX_LOOP_INTERVAL` seconds (5) even with nothing due, so a
live beat's row is at most about STAMP_EVERY + that interval old; ops.health calls beat down when
it is older than HEALTH_BEAT_DOWN_AFTER (60 s). The stamp uses PostgreSQL's clock, and health
compares with the same clock, so a skewed beat or web host cannot fake or hide an outage.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import datetime

from django.db import DatabaseError, connection
from django.utils import timezone

logger = logging.getLogger(__name__)
STAMP_EVERY = 5.0  # seconds between two stamps of one process
FORGET_AFTER_DAYS = 7  # rows of beat processes gone this long are deleted at a beat's start

_UPSERT = """
INSERT INTO scheduler_beatheartbeat (hostname, pid, started_at, last_tick_at)
VALUES (%s, %s, %s, statement_timestamp())
ON CONFLICT (hostname, pid) DO UPDATE
    SET started_at = EXCLUDED.started_at, last_tick_at = EXCLUDED.last_tick_at
"""


class _State:
    started_at: datetime | None = None  # this process's first stamp
    last_stamp: float = -STAMP_EVERY  # time.monotonic() of the last successful stamp


def beat_heartbeat_stamp(*, force: bool = False) -> bool:
    """Stamp this beat process's row unless it was stamped less than STAMP_EVERY seconds ago.

    Never raises: a database error is logged and the stamp is tried again at the next tick (a
    beat that cannot reach PostgreSQL is rightly seen as down). Returns whether it wrote.
    """
    if not force and time.monotonic() - _State.last_stamp < STAMP_EVERY:
        return False
    first = _State.started_at is None
    if first:
        _State.started_at = timezone.now()
    try:
        with connection.cursor() as cursor:
            if first:
                cursor.execute(
                    "DELETE FROM scheduler_beatheartbeat WHERE last_tick_at < "
                    "statement_timestamp() - make_interval(days => %s)",
                    [FORGET_AFTER_DAYS],
                )
            cursor.execute(_UPSERT, [socket.gethostname()[:255], os.getpid(), _State.started_at])
    except DatabaseError as exc:
        logger.warning("beat could not stamp its heartbeat (%s); trying at the next tick", exc)
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()
        return False
    _State.last_stamp = time.monotonic()
    return True
