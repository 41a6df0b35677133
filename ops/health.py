"""Beat liveness for /healthz, from evidence beat leaves in PostgreSQL (beat itself exposes none).

Beat is alive if, after the newest minute boundary at which some enabled schedule fired (looking
at boundaries at least HEALTH_BEAT_GRACE seconds old), it left a trace:
- django-celery-beat's `PeriodicTask.last_run_at`: beat writes it for every task it sends, at
  its next sync (every 3 minutes by default, hence the grace), or
- a ledger row written by beat's run path: a `beat`-triggered run (created when a worker starts
  the message beat sent) or a `reconciler` row (the reconciler runs inside beat every 30 s).
Two sources, so a stopped worker alone does not make beat look dead. With no enabled schedule
due in the last day there is nothing to judge: "idle".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Max
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from scheduler.models import JobRun, JobSchedule
from scheduler.services.schedules import enabled_plans

LOOKBACK = timedelta(days=1)


@dataclass(frozen=True)
class BeatLiveness:
    state: str  # ok, idle, stale
    expected: datetime | None  # the boundary beat should have fired
    last_seen: datetime | None  # newest evidence of beat

    @property
    def healthy(self) -> bool:
        return self.state != "stale"

    def describe(self) -> str:
        seen = self.last_seen.isoformat() if self.last_seen else "never"
        if self.state == "idle":
            return "idle: no schedule was due in the last day"
        if self.state == "ok":
            return "ok"
        return f"stale: nothing sent for {self.expected.isoformat()}; last seen {seen}"


def beat_liveness(*, now: datetime | None = None) -> BeatLiveness:
    now = now or timezone.now()
    settled = now - timedelta(seconds=settings.HEALTH_BEAT_GRACE)
    # A boundary before a schedule was created or (re)enabled is not one beat could have fired:
    # right after a deploy, nothing is expected yet.
    since = dict(JobSchedule.objects.values_list("periodic_task__name", "tracked_since"))
    expected = max(
        (
            boundary
            for plan in enabled_plans()
            if (boundary := plan.cron.latest_fire_time(settled)) is not None
            and plan.name in since
            and boundary >= since[plan.name]
        ),
        default=None,
    )
    sent = PeriodicTask.objects.filter(enabled=True).aggregate(at=Max("last_run_at"))["at"]
    ran = JobRun.objects.filter(
        trigger__in=[JobRun.Trigger.BEAT, JobRun.Trigger.RECONCILER], created_at__lte=now
    ).aggregate(at=Max("created_at"))["at"]
    last_seen = max((m for m in (sent, ran) if m is not None), default=None)
    if expected is None or expected < now - LOOKBACK:
        return BeatLiveness("idle", expected, last_seen)
    # Beat stamps last_run_at with the send moment, a little before or after the boundary.
    alive = last_seen is not None and last_seen >= expected - timedelta(seconds=5)
    return BeatLiveness("ok" if alive else "stale", expected, last_seen)
