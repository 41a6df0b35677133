"""Liveness of beat and the watchdog from their own heartbeat rows (scheduler.heartbeat): one
indexed read each, O(1). Judged by PostgreSQL's clock (the clock the stamps used).

Beat stamps its row at most every STAMP_EVERY (5 s) and ticks at least every
CELERY_BEAT_MAX_LOOP_INTERVAL (5 s) even with nothing due, so a live beat's newest stamp is at
most ~10 s old:

- ok: newer than twice that normal gap (20 s by default);
- stale: older, but not yet HEALTH_BEAT_DOWN_AFTER (60 s): a slow tick (a slow database, a burst
  of sends) or a beat about to be declared down;
- down: older than HEALTH_BEAT_DOWN_AFTER, or no beat ever stamped.

60 s is six normal gaps, so a slow tick does not flap the page, and beat's death turns red within
the minute.

The watchdog stamps at the start of every pass, WATCHDOG_INTERVAL (30 s) apart, and a pass may
spend up to monitoring.watchdog.DELIVERY_BUDGET (20 s) sending notifications: ok within one interval
plus that budget and a few seconds, stale after it, down after HEALTH_WATCHDOG_DOWN_AFTER (120 s:
about three passes missed). Who watches the watchdog: the web process, which reads this row for
/healthz/watchdog, the admin header and `jobsite_watchdog_up`, and Prometheus, which pages on
that metric (deploy/prometheus/rules.yml, WatchdogDown).

What anonymous callers get are these words; times and hosts are for staff pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import DateTimeField, F, Func

from scheduler.heartbeat import BEAT, STAMP_EVERY, WATCHDOG
from scheduler.models import ProcessHeartbeat

SHOWN_FOR = timedelta(days=1)  # processes listed on the dashboard
# Seconds a pass may spend beyond its interval before the watchdog is late (its delivery budget,
# monitoring.watchdog.DELIVERY_BUDGET, plus the other steps' few seconds).
WATCHDOG_PASS_SLACK = 25


class _StatementTimestamp(Func):
    # The database's clock at this statement (CURRENT_TIMESTAMP is the transaction's start).
    function = "statement_timestamp"
    template = "statement_timestamp()"
    output_field = DateTimeField()


def stale_after(kind: str = BEAT) -> timedelta:
    if kind == WATCHDOG:
        return timedelta(seconds=settings.WATCHDOG_INTERVAL + WATCHDOG_PASS_SLACK)
    return timedelta(seconds=2 * (settings.CELERY_BEAT_MAX_LOOP_INTERVAL + STAMP_EVERY))


def down_after(kind: str = BEAT) -> timedelta:
    if kind == WATCHDOG:
        return timedelta(seconds=settings.HEALTH_WATCHDOG_DOWN_AFTER)
    return timedelta(seconds=settings.HEALTH_BEAT_DOWN_AFTER)


def _state(kind: str, age: timedelta | None) -> str:
    if age is None or age > down_after(kind):
        return "down"
    return "stale" if age > stale_after(kind) else "ok"


@dataclass(frozen=True)
class Liveness:
    state: str  # ok, stale, down
    last_seen: datetime | None  # newest stamp of any process of the kind
    age: timedelta | None  # database clock minus last_seen
    hostname: str = ""
    pid: int | None = None
    started_at: datetime | None = None
    kind: str = BEAT

    @property
    def healthy(self) -> bool:
        """The process stamped within its down-after ("stale" is late, not yet dead)."""
        return self.state != "down"

    def describe(self) -> str:
        """For staff: the state with when and where the process was last seen."""
        if self.age is None:
            return f"down: no {self.kind} has ever stamped a heartbeat"
        what = "last tick" if self.kind == BEAT else "last pass"
        return (
            f"{self.state}: {what} {self.age.total_seconds():.0f} s ago "
            f"({self.hostname} pid {self.pid})"
        )


BeatLiveness = Liveness  # the name the dashboard and outages knew it by


def _with_age(kind: str):
    return ProcessHeartbeat.objects.filter(kind=kind).annotate(
        age=_StatementTimestamp() - F("last_tick_at")
    )


def _liveness(kind: str, row: ProcessHeartbeat) -> Liveness:
    return Liveness(
        _state(kind, row.age),
        row.last_tick_at,
        row.age,
        row.hostname,
        row.pid,
        row.started_at,
        kind,
    )


def process_liveness(kind: str) -> Liveness:
    """The state of `kind` (beat, watchdog) from the newest heartbeat of any of its processes."""
    newest = _with_age(kind).order_by("-last_tick_at").first()
    if newest is None:
        return Liveness("down", None, None, kind=kind)
    return _liveness(kind, newest)


def processes(kind: str) -> list[Liveness]:
    """Every process of `kind` seen in the last day, newest first (two live beats send twice)."""
    rows = _with_age(kind).filter(age__lte=SHOWN_FOR).order_by("-last_tick_at")
    return [_liveness(kind, row) for row in rows]


def beat_liveness() -> Liveness:
    return process_liveness(BEAT)


def beat_processes() -> list[Liveness]:
    return processes(BEAT)


def watchdog_liveness() -> Liveness:
    return process_liveness(WATCHDOG)


def watchdog_processes() -> list[Liveness]:
    return processes(WATCHDOG)
