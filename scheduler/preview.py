"""A schedule as it would be, before it is written: its next starts and the jobs it would start
together with. Reads only; the write services and the admin's form answer it as a preview."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone

from scheduler.collisions import Collision, Planned, analyse
from scheduler.cron import Cron
from scheduler.selectors import next_starts
from scheduler.services.schedules import effective_offset, enabled_plans


@dataclass
class Preview:
    """A schedule as it would be: its next starts and the jobs it would start together with."""

    job: str
    cron: str
    offset: int
    enabled: bool
    next_runs: list[datetime]
    collisions: list[Collision] = field(default_factory=list)  # that include this job
    new_partners: list[str] = field(default_factory=list)  # colliding now, not before

    @property
    def six_field(self) -> str:
        return f"{effective_offset(self.offset)} {self.cron}"

    def warning(self) -> str:
        if not self.new_partners:
            return ""
        first = min(c.first for c in self.collisions)
        return (
            f"{self.job} would start in the same second as {', '.join(self.new_partners)} "
            f"(first at {first:%a %H:%M:%S} UTC); choose another offset or minute"
        )


def _partners(name: str, collisions: list[Collision]) -> set[str]:
    return {job for c in collisions if name in c.jobs for job in c.jobs if job != name}


def schedule_preview(
    *, name: str, cron: Cron, offset: int, enabled: bool, now: datetime | None = None
) -> Preview:
    """Next starts and collisions of `name` if it had this cron/offset/enabled; writes nothing.

    Collisions come from `scheduler.collisions.analyse` over a week of real fire times of every
    enabled schedule, so two jobs with different offsets never collide and two with the same
    offset collide only if their minutes meet.
    """
    now = now or timezone.now()
    current = enabled_plans()
    before = analyse(current, start=now.date())
    others = [plan for plan in current if plan.name != name]
    collisions: list[Collision] = []
    if enabled:
        after = analyse([*others, Planned(name, cron, effective_offset(offset))], start=now.date())
        collisions = [c for c in after.collisions if name in c.jobs]
    fresh = _partners(name, collisions) - _partners(name, before.collisions)
    return Preview(
        job=name,
        cron=str(cron),
        offset=offset,
        enabled=enabled,
        next_runs=next_starts(cron, offset, now=now) if enabled else [],
        collisions=collisions,
        new_partners=sorted(fresh),
    )
