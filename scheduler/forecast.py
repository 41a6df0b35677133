"""Starts ahead, counted per distinct cron rather than per schedule.

Thousands of schedules share a few crons and 60 offsets. So: one grouped query counts enabled
schedules per (cron, effective offset); each distinct cron's fire minutes in the window become one
bitmask (`Cron.week_mask`, arithmetic over its fields); crons with the same minutes in the window
merge into a pattern; and each minute's per-second counts are the sum of the offset weights of the
patterns firing then, memoised per set of patterns. The cost grows with distinct crons and the
window's length (86,400 seconds a day), not with the number of schedules; names are read only for
the few seconds shown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Count, Q
from django.db.models.functions import Coalesce
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from scheduler.conf import stagger_enabled
from scheduler.cron import MINUTES_PER_DAY, Cron, CronError
from scheduler.services.schedules import effective_offset


@dataclass
class PlanGroup:
    """Enabled crontab schedules that start at the same moments: one cron, one offset."""

    cron: Cron
    offset: int  # effective (0 with the stagger off)
    count: int
    crontab_ids: list[int] = field(default_factory=list)


def enabled_plan_groups() -> list[PlanGroup]:
    """What `enabled_plans()` lists, counted per (cron, effective offset) in one grouped query."""
    rows = (
        PeriodicTask.objects.filter(enabled=True, crontab__isnull=False)
        .values("crontab_id", stored=Coalesce("job_schedule__offset_seconds", 0))
        .annotate(n=Count("id"))
        .order_by()
    )
    rows = list(rows)
    crontabs = CrontabSchedule.objects.in_bulk({row["crontab_id"] for row in rows})
    groups: dict[tuple[Cron, int], PlanGroup] = {}
    for row in rows:
        try:
            cron = Cron.from_model(crontabs[row["crontab_id"]])
            cron.validate()
        except CronError:
            continue  # left out by enabled_plans() too; reported by schedule_problems
        key = (cron, effective_offset(row["stored"]))
        group = groups.setdefault(key, PlanGroup(cron, key[1], 0))
        group.count += row["n"]
        group.crontab_ids.append(row["crontab_id"])
    return list(groups.values())


@dataclass
class StartsAhead:
    """Starts per second of [start, start + len(per_second) s); `start` is a whole second."""

    start: datetime
    per_second: list[int]
    groups: list[PlanGroup]

    def moment(self, index: int) -> datetime:
        return self.start + timedelta(seconds=index)

    def names_at(self, index: int, *, limit: int) -> list[str]:
        """Up to `limit` names of the schedules starting at second `index`, by name."""
        moment = self.moment(index)
        boundary = moment - timedelta(seconds=moment.second)
        ids = [
            crontab_id
            for group in self.groups
            if group.offset == moment.second and _fires_at(group.cron, boundary)
            for crontab_id in group.crontab_ids
        ]
        if not ids:
            return []
        tasks = PeriodicTask.objects.filter(enabled=True, crontab_id__in=ids)
        if stagger_enabled():
            on_second = Q(job_schedule__offset_seconds=moment.second)
            if moment.second == 0:
                on_second |= Q(job_schedule__isnull=True)
            tasks = tasks.filter(on_second)
        return list(tasks.order_by("name").values_list("name", flat=True)[:limit])


def _fires_at(cron: Cron, boundary: datetime) -> bool:
    return next(iter(cron.fire_times(boundary, boundary + timedelta(minutes=1))), None) is not None


def starts_ahead(groups: list[PlanGroup], *, now: datetime, seconds: int) -> StartsAhead:
    """How many schedules start in each second of [now, now + seconds) (`now` rounded up)."""
    origin = now.replace(second=0, microsecond=0)  # the first boundary whose starts can count
    skip = math.ceil((now - origin).total_seconds())
    minutes = math.ceil((skip + seconds) / 60)
    midnight = origin.replace(hour=0, minute=0)
    into_day = (origin - midnight) // timedelta(minutes=1)
    days = math.ceil((into_day + minutes) / MINUTES_PER_DAY)
    window = (1 << minutes) - 1

    # Crons firing at the same minutes of this window share a pattern: offset -> schedules.
    patterns: dict[int, list[int]] = {}
    masks: dict[Cron, int] = {}
    for group in groups:
        if group.cron not in masks:
            masks[group.cron] = (group.cron.week_mask(midnight.date(), days) >> into_day) & window
        weights = patterns.setdefault(masks[group.cron], [0] * 60)
        weights[group.offset] += group.count

    firing = [0] * minutes  # per minute: bit i set when pattern i fires then
    for index, mask in enumerate(patterns):
        bits = format(mask, f"0{minutes}b")[::-1]
        minute = bits.find("1")
        while minute != -1:
            firing[minute] |= 1 << index
            minute = bits.find("1", minute + 1)
    weights = list(patterns.values())
    memo: dict[int, list[int]] = {0: [0] * 60}
    per_second: list[int] = []
    for key in firing:
        if key not in memo:
            members = [weights[i] for i in range(len(weights)) if key >> i & 1]
            memo[key] = [sum(column) for column in zip(*members, strict=True)]
        per_second.extend(memo[key])
    return StartsAhead(
        start=origin + timedelta(seconds=skip),
        per_second=per_second[skip : skip + seconds],
        groups=groups,
    )
