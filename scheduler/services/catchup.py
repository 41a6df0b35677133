"""When a late run starts: at its job's own second, one start per second, never all at once.

A slot is sent late when beat starts after an outage (django-celery-beat sends an overdue entry at
once) and when the reconciler re-sends a slot nobody ran (or a lost attempt). Sent with no
countdown, every job's late run of a restart started within the same second or two. Instead a
late run starts at

1. its job's own second (the effective offset) in the current or next minute, at least `LEAD`
   from now, or the next free second after it;
2. the soonest free second from now on instead, when that own second is where the job's own
   regular run starts (an every-minute job: its catch-up would meet its own next run, at its
   lock) or lies past the slot's starting deadline (beat's message would expire unrun);
3. a second is taken when another late run reserved it (`CatchUpStart`, whose primary key is the
   second: `INSERT ... ON CONFLICT DO NOTHING`, so beat and the reconciler, in any process, never
   pick the same second) or, while beat runs, when any job's regular slot starts in it;
4. nothing is sent when no second is free within the starting deadline (the slot is then recorded
   `missed` by the reconciler), or when the slot was already sent late: beat's catch-up at start
   has no ledger row until it starts, so the reconciler's pass right after it would send the same
   slot again; its reservation says it is on its way.

With beat down (the reconciler runs elsewhere), no regular slot starts, so only reservations take
seconds; rule 2 still applies (beat may be back by the job's own second, and send its regular run
there). "Beat runs": a beat heartbeat younger than BEAT_ALIVE_WITHIN.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import datetime, timedelta

from django.db import connection
from django.utils import timezone

from scheduler.collisions import Planned
from scheduler.models import CatchUpStart
from scheduler.services.schedules import enabled_plans

# A late run's message is sent now and starts no sooner than this: the send and the worker's
# pick-up take milliseconds (FACTS: ~14 ms), so the run starts at its second, not after it.
LEAD = timedelta(seconds=1)
# A send this long after its slot is late (beat's tick itself takes milliseconds; a slow tick
# of a few seconds still sends at once, as before).
LATE_AFTER = timedelta(seconds=5)
# Beat stamps its heartbeat at least every ~10 s (scheduler.heartbeat).
BEAT_ALIVE_WITHIN = timedelta(seconds=30)
# The candidates looked at: a minute of seconds covers every offset once.
SEARCH = 60
PLANS_TTL = 10.0  # seconds a process reuses the enabled schedules it read
KEEP = timedelta(hours=1)


class _Plans:
    """Enabled schedules by effective offset, read at most every PLANS_TTL seconds per process:
    a restart sends every job's catch-up in one tick, and each would read them all again."""

    read_at = -PLANS_TTL
    by_offset: dict[int, list[Planned]] = {}

    @classmethod
    def at(cls, second: int) -> list[Planned]:
        if time.monotonic() - cls.read_at >= PLANS_TTL:
            by_offset: dict[int, list[Planned]] = defaultdict(list)
            for plan in enabled_plans():
                by_offset[plan.offset].append(plan)
            cls.by_offset, cls.read_at = dict(by_offset), time.monotonic()
        return cls.by_offset.get(second, [])

    @classmethod
    def forget(cls) -> None:
        cls.read_at = -PLANS_TTL


def regular_starts(moment: datetime) -> set[str]:
    """Names of the enabled schedules whose regular slot starts in this whole second."""
    boundary = moment.replace(second=0, microsecond=0)
    return {plan.name for plan in _Plans.at(moment.second) if plan.cron.fires_at(boundary)}


def beat_alive() -> bool:
    """Whether a beat process stamped its heartbeat lately (PostgreSQL's clock on both sides)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM scheduler_processheartbeat WHERE kind = 'beat' "
            "AND last_tick_at > statement_timestamp() - make_interval(secs => %s))",
            [BEAT_ALIVE_WITHIN.total_seconds()],
        )
        return bool(cursor.fetchone()[0])


def is_late(slot: datetime, now: datetime) -> bool:
    return now - slot > LATE_AFTER


def catch_up_start(
    *,
    schedule_name: str,
    job_name: str,
    offset: int,
    slot: datetime,
    deadline: timedelta,
    now: datetime | None = None,
    beat_running: bool | None = None,
) -> datetime | None:
    """Reserve the second a late run of `slot` starts at (rules 1-4 above); None: send nothing
    (no free second within the deadline, or already sent late).

    `schedule_name` is the PeriodicTask whose slot it is, `offset` its effective offset (0-59).
    """
    now = now or timezone.now()
    if beat_running is None:
        beat_running = beat_alive()
    soonest = now + LEAD
    earliest = soonest.replace(microsecond=0) + timedelta(seconds=bool(soonest.microsecond))
    first = earliest.replace(second=offset)
    if first < earliest:
        first += timedelta(minutes=1)
    CatchUpStart.objects.filter(second__lt=now - KEEP).delete()  # one index range, rarely rows
    if CatchUpStart.objects.filter(job=job_name[:100], slot=slot).exists():
        return None  # rule 4: already sent late
    latest = slot + deadline - LEAD  # a start after this would meet an expired message
    # Whether beat runs or not: a beat that comes back before `first` sends the job's regular run
    # for that very second (issue 16's outage test saw both start in it, after a restart).
    own_regular = schedule_name in regular_starts(first)
    start = earliest if own_regular or first > latest else first  # rule 2
    for step in range(SEARCH):
        second = start + timedelta(seconds=step)
        if second > latest:
            return None
        regular = regular_starts(second)
        if (beat_running and regular) or schedule_name in regular:
            continue  # rule 3 (the job's own regular second: rule 2, beat or not)
        with connection.cursor() as cursor:
            cursor.execute(_RESERVE, [second, job_name[:100], slot])
            if cursor.fetchone() is not None:
                return second
    return None


def catch_up_release(*, second: datetime, job_name: str, slot: datetime) -> None:
    """Give a reserved second back: its message was never sent (the broker refused it), so the
    slot may be sent late again by a later pass."""
    CatchUpStart.objects.filter(second=second, job=job_name[:100], slot=slot).delete()


# The primary key is the second: of two processes reserving it, one gets the row back.
_RESERVE = """
INSERT INTO scheduler_catchupstart (second, job, slot) VALUES (%s, %s, %s)
ON CONFLICT (second) DO NOTHING
RETURNING second
"""
