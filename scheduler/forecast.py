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

from django.db import connection
from django.db.models import Count
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
        if row["crontab_id"] not in group.crontab_ids:  # with the stagger off offsets merge
            group.crontab_ids.append(row["crontab_id"])
    return list(groups.values())


@dataclass
class StartsAhead:
    """Starts per second of [start, start + len(per_second) s); `start` is a whole second."""

    start: datetime
    per_second: list[int]
    groups: list[PlanGroup]
    skip: int  # seconds from the first boundary (`start` rounded down to the minute) to `start`
    masks: dict[Cron, int]  # per cron: bit m set when it fires at that boundary + m minutes

    def moment(self, index: int) -> datetime:
        return self.start + timedelta(seconds=index)

    def _firing(self, index: int) -> list[PlanGroup]:
        minute, second = divmod(self.skip + index, 60)
        return [g for g in self.groups if g.offset == second and self.masks[g.cron] >> minute & 1]

    def first_named(self, count: int) -> list[tuple[datetime, str]]:
        """The first `count` starts as (moment, schedule name), by moment then name.

        One query: each (crontab, offset) pair involved gives its first `count` names.
        """
        seconds, total = [], 0
        for index, starts in enumerate(self.per_second):
            if total >= count:
                break
            if starts:
                seconds.append(index)
                total += starts
        involved = {id(g): g for index in seconds for g in self._firing(index)}.values()
        pairs = [(crontab, g.offset) for g in involved for crontab in g.crontab_ids]
        with connection.cursor() as cursor:
            cursor.execute(
                _NAMES_SQL,
                [[c for c, _ in pairs], [o for _, o in pairs], stagger_enabled(), count],
            )
            names: dict[tuple[int, int], list[str]] = {}
            for crontab, offset, name in cursor.fetchall():
                names.setdefault((crontab, offset), []).append(name)
        found: list[tuple[datetime, str]] = []
        for index in seconds:
            at = sorted(
                name
                for g in self._firing(index)
                for crontab in g.crontab_ids
                for name in names.get((crontab, g.offset), [])
            )
            found += [(self.moment(index), name) for name in at[: count - len(found)]]
        return found


# The enabled schedules of each (crontab, effective offset) pair, first names only. With the
# stagger off every effective offset is 0 and the stored offset does not select.
_NAMES_SQL = """
SELECT pair.crontab_id, pair.offset_s, named.name
FROM unnest(%s::int[], %s::int[]) AS pair(crontab_id, offset_s)
CROSS JOIN LATERAL (
    SELECT task.name
    FROM django_celery_beat_periodictask task
    LEFT JOIN scheduler_jobschedule schedule ON schedule.periodic_task_id = task.id
    WHERE task.enabled AND task.crontab_id = pair.crontab_id
        AND (NOT %s OR coalesce(schedule.offset_seconds, 0) = pair.offset_s)
    ORDER BY task.name
    LIMIT %s
) AS named
"""


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
        skip=skip,
        masks=masks,
    )
