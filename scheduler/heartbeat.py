"""Process heartbeats: beat and the watchdog each stamp their own `ProcessHeartbeat` row (one per
process, by kind), at most every STAMP_EVERY seconds, so a stamp costs one single-row upsert per
few seconds whatever the number of schedules.

- **beat** stamps from every tick of its loop (scheduler.schedulers), which runs at least every
  `CELERY_BEAT_MAX_LOOP_INTERVAL` seconds (5) even with nothing due: a live beat's row is at most
  about STAMP_EVERY + that interval old; monitoring.liveness calls it down past
  HEALTH_BEAT_DOWN_AFTER.
- **the watchdog** stamps at the start of each pass (monitoring.watchdog), every WATCHDOG_INTERVAL
  seconds (30); monitoring.liveness calls it down past HEALTH_WATCHDOG_DOWN_AFTER. The watchdog
  watches beat; the web process (/healthz/watchdog, the admin header, `jobsite_watchdog_up`) and
  Prometheus watch the watchdog: a dead process cannot report its own death.

A row is written only by the process it describes, so its figure stops the moment that process
stops; evidence other processes write (sent messages, runs) keeps moving after it died. The stamp
uses PostgreSQL's clock, and health compares with the same clock, so a skewed host cannot fake or
hide an outage.
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
FORGET_AFTER_DAYS = 7  # rows of processes gone this long are deleted when one of the kind starts
BEAT = "beat"
WATCHDOG = "watchdog"
KINDS = (BEAT, WATCHDOG)

_UPSERT = """
INSERT INTO scheduler_processheartbeat (kind, hostname, pid, started_at, last_tick_at)
VALUES (%s, %s, %s, %s, statement_timestamp())
ON CONFLICT (kind, hostname, pid) DO UPDATE
    SET started_at = EXCLUDED.started_at, last_tick_at = EXCLUDED.last_tick_at
"""


class _State:
    """This process's stamps, per kind (a test process may stamp as both)."""

    started_at: dict[str, datetime] = {}  # this process's first stamp
    last_stamp: dict[str, float] = {}  # time.monotonic() of the last successful stamp


def heartbeat_stamp(*, kind: str, force: bool = False) -> bool:
    """Stamp this process's row of `kind` unless it was stamped less than STAMP_EVERY seconds ago.

    Never raises: a database error is logged and the stamp is tried again at the next call (a
    process that cannot reach PostgreSQL is rightly seen as down). Returns whether it wrote.
    """
    if kind not in KINDS:
        raise ValueError(f"heartbeat kind {kind!r} is not one of {', '.join(KINDS)}")
    last = _State.last_stamp.get(kind, -STAMP_EVERY)
    if not force and time.monotonic() - last < STAMP_EVERY:
        return False
    first = kind not in _State.started_at
    started_at = _State.started_at.setdefault(kind, timezone.now())
    try:
        with connection.cursor() as cursor:
            if first:
                cursor.execute(
                    "DELETE FROM scheduler_processheartbeat WHERE kind = %s AND last_tick_at < "
                    "statement_timestamp() - make_interval(days => %s)",
                    [kind, FORGET_AFTER_DAYS],
                )
            cursor.execute(_UPSERT, [kind, socket.gethostname()[:255], os.getpid(), started_at])
    except DatabaseError as exc:
        logger.warning("%s could not stamp its heartbeat (%s); trying again next time", kind, exc)
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()
        return False
    _State.last_stamp[kind] = time.monotonic()
    return True


def beat_heartbeat_stamp(*, force: bool = False) -> bool:
    """Beat's stamp, from every tick of its loop."""
    return heartbeat_stamp(kind=BEAT, force=force)


def watchdog_heartbeat_stamp(*, force: bool = False) -> bool:
    """The watchdog's stamp, at the start of every pass."""
    return heartbeat_stamp(kind=WATCHDOG, force=force)
