"""Beat liveness from beat's own heartbeat row (scheduler.heartbeat): one indexed read, O(1).

Beat stamps its row at most every STAMP_EVERY (5 s) and ticks at least every
CELERY_BEAT_MAX_LOOP_INTERVAL (5 s) even with nothing due, so a live beat's newest stamp is at
most ~10 s old. Judged by PostgreSQL's clock (the clock the stamp used):

- ok: newer than twice that normal gap (20 s by default);
- stale: older, but not yet HEALTH_BEAT_DOWN_AFTER (60 s): a slow tick (a slow database, a burst
  of sends) or a beat about to be declared down;
- down: older than HEALTH_BEAT_DOWN_AFTER, or no beat ever stamped.

60 s is six normal gaps, so a slow tick does not flap the page, and beat's death turns red within
the minute. What anonymous callers get are these words; times and hosts are for staff pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import DateTimeField, F, Func

from scheduler.heartbeat import STAMP_EVERY
from scheduler.models import BeatHeartbeat

SHOWN_FOR = timedelta(days=1)  # beat processes listed on the dashboard


class _StatementTimestamp(Func):
    # The database's clock at this statement (CURRENT_TIMESTAMP is the transaction's start).
    function = "statement_timestamp"
    template = "statement_timestamp()"
    output_field = DateTimeField()


def stale_after() -> timedelta:
    return timedelta(seconds=2 * (settings.CELERY_BEAT_MAX_LOOP_INTERVAL + STAMP_EVERY))


def down_after() -> timedelta:
    return timedelta(seconds=settings.HEALTH_BEAT_DOWN_AFTER)


def _state(age: timedelta | None) -> str:
    if age is None or age > down_after():
        return "down"
    return "stale" if age > stale_after() else "ok"


@dataclass(frozen=True)
class BeatLiveness:
    state: str  # ok, stale, down
    last_seen: datetime | None  # newest stamp of any beat process
    age: timedelta | None  # database clock minus last_seen
    hostname: str = ""
    pid: int | None = None
    started_at: datetime | None = None

    @property
    def healthy(self) -> bool:
        """Beat's loop ran within HEALTH_BEAT_DOWN_AFTER ("stale" is late, not yet dead)."""
        return self.state != "down"

    def describe(self) -> str:
        """For staff: the state with when and where beat was last seen."""
        if self.age is None:
            return "down: no beat has ever stamped a heartbeat"
        return (
            f"{self.state}: last tick {self.age.total_seconds():.0f} s ago "
            f"({self.hostname} pid {self.pid})"
        )


def _with_age():
    return BeatHeartbeat.objects.annotate(age=_StatementTimestamp() - F("last_tick_at"))


def beat_liveness() -> BeatLiveness:
    """Beat's state from the newest heartbeat of any beat process."""
    newest = _with_age().order_by("-last_tick_at").first()
    if newest is None:
        return BeatLiveness("down", None, None)
    return BeatLiveness(
        _state(newest.age),
        newest.last_tick_at,
        newest.age,
        newest.hostname,
        newest.pid,
        newest.started_at,
    )


def beat_processes() -> list[BeatLiveness]:
    """Every beat process seen in the last day, newest first (two live ones send twice)."""
    rows = _with_age().filter(age__lte=SHOWN_FOR).order_by("-last_tick_at")
    return [
        BeatLiveness(_state(r.age), r.last_tick_at, r.age, r.hostname, r.pid, r.started_at)
        for r in rows
    ]
