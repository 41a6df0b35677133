"""Operators' reads: job overview, statistics over a window, chart series, the 24-hour forecast.

Statistics are computed in PostgreSQL (one grouped statement per question) so a dashboard over a
week of every-minute jobs (~120k ledger rows) stays a few queries. Definitions, also in README:

- runs: ledger rows of the window that stand for an execution (duplicates and skipped_lock
  deliveries are counted on their own);
- success rate: succeeded / (succeeded + failed + lost + missed + expired); retrying attempts
  and running or queued rows are left out until they end;
- duration: succeeded runs; lateness: beat-triggered runs (start minus slot).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Max
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from ops.services import next_slots
from scheduler.cron import Cron, CronError
from scheduler.models import JobRun
from scheduler.registry import Job, all_jobs
from scheduler.services.schedules import effective_offset, enabled_plans

MAX_CONCURRENCY_ROWS = 200_000  # ~20 MB of tuples; a week of 12 every-minute jobs is ~120k


@dataclass
class JobStats:
    job: str
    runs: int = 0
    succeeded: int = 0
    failed: int = 0
    success_rate: float | None = None
    duration_p50_ms: float | None = None
    duration_p95_ms: float | None = None
    duration_mean_ms: float | None = None
    lateness_p99_ms: float | None = None
    skipped_lock: int = 0
    duplicate: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "job"}


_STATS_SQL = """
SELECT job,
    count(*) FILTER (WHERE status NOT IN ('duplicate', 'skipped_lock', 'refused')),
    count(*) FILTER (WHERE status = 'succeeded'),
    count(*) FILTER (WHERE status IN ('failed', 'lost', 'missed', 'expired')),
    percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) FILTER (WHERE status = 'succeeded'),
    percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) FILTER (WHERE status = 'succeeded'),
    avg(duration_ms) FILTER (WHERE status = 'succeeded'),
    percentile_cont(0.99) WITHIN GROUP (ORDER BY lateness_ms)
        FILTER (WHERE trigger = 'beat' AND lateness_ms IS NOT NULL),
    count(*) FILTER (WHERE status = 'skipped_lock'),
    count(*) FILTER (WHERE status = 'duplicate')
FROM scheduler_jobrun
WHERE slot >= %s AND slot < %s
GROUP BY job
"""


def job_stats(*, since: datetime, until: datetime | None = None) -> dict[str, JobStats]:
    """Per job statistics of the runs whose slot is in [since, until)."""
    until = until or timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(_STATS_SQL, [since, until])
        rows = cursor.fetchall()
    stats = {}
    for job, runs, ok, bad, p50, p95, mean, late99, skipped, dup in rows:
        ended = ok + bad
        stats[job] = JobStats(
            job=job,
            runs=runs,
            succeeded=ok,
            failed=bad,
            success_rate=round(ok / ended, 4) if ended else None,
            duration_p50_ms=_num(p50),
            duration_p95_ms=_num(p95),
            duration_mean_ms=_num(mean),
            lateness_p99_ms=_num(late99),
            skipped_lock=skipped,
            duplicate=dup,
        )
    return stats


def _num(value: object) -> float | None:
    return None if value is None else round(float(value), 1)  # type: ignore[arg-type]


def last_runs(names: list[str] | None = None) -> dict[str, JobRun]:
    """The newest run (not a duplicate delivery) of each job."""
    rows = JobRun.objects.filter(JobRun.SLOT_OWNERS)
    if names is not None:
        rows = rows.filter(job__in=names)
    newest = rows.order_by("job", "-slot", "-attempt").distinct("job")
    return {run.job: run for run in newest}


def last_successes() -> dict[str, datetime]:
    rows = (
        JobRun.objects.filter(status=JobRun.Status.SUCCEEDED)
        .values("job")
        .annotate(at=Max("finished_at"))
    )
    return {row["job"]: row["at"] for row in rows}


@dataclass
class JobView:
    """One registered job as operators see it."""

    job: Job
    task: PeriodicTask | None
    cron: Cron | None
    offset: int | None
    next_runs: list[datetime]
    last: JobRun | None
    stats: JobStats

    @property
    def enabled(self) -> bool:
        return bool(self.task and self.task.enabled)

    @property
    def six_field(self) -> str | None:
        if self.cron is None:
            return None
        return self.cron.six_field(effective_offset(self.offset or 0))


def jobs_overview(*, now: datetime | None = None, window: timedelta | None = None) -> list[JobView]:
    """Every registered job: schedule, offset, next starts, last run, statistics over `window`."""
    now = now or timezone.now()
    window = window or timedelta(hours=24)
    tasks = {
        t.name: t for t in PeriodicTask.objects.select_related("crontab", "job_schedule").all()
    }
    stats = job_stats(since=now - window, until=now)
    last = last_runs()
    views = []
    for job in all_jobs():
        task = tasks.get(job.name)
        cron = offset = None
        upcoming: list[datetime] = []
        if task is not None and task.crontab_id:
            offset = getattr(getattr(task, "job_schedule", None), "offset_seconds", 0)
            try:
                cron = Cron.from_model(task.crontab)
                cron.validate()
                if task.enabled:
                    upcoming = next_slots(cron, offset, now=now, count=5)
            except CronError:
                cron = None
        views.append(
            JobView(
                job=job,
                task=task,
                cron=cron,
                offset=offset,
                next_runs=upcoming,
                last=last.get(job.name),
                stats=stats.get(job.name, JobStats(job=job.name)),
            )
        )
    return views


def starts_per_second(*, since: datetime, until: datetime) -> list[int]:
    """How many runs started in each second of the minute (0..59): the stagger made visible."""
    counts = [0] * 60
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT floor(extract(second FROM started_at))::int, count(*) FROM scheduler_jobrun "
            "WHERE started_at >= %s AND started_at < %s GROUP BY 1",
            [since, until],
        )
        for second, count in cursor.fetchall():
            counts[min(59, second)] += count
    return counts


def concurrency_series(
    *, since: datetime, until: datetime, buckets: int = 96
) -> list[tuple[datetime, int]]:
    """Peak number of runs executing at once within each of `buckets` equal intervals."""
    step = (until - since) / buckets
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT started_at, coalesce(finished_at, %s) FROM scheduler_jobrun "
            "WHERE started_at IS NOT NULL AND started_at < %s "
            "AND (finished_at IS NULL OR finished_at > %s) ORDER BY started_at LIMIT %s",
            [until, until, since, MAX_CONCURRENCY_ROWS],
        )
        intervals = cursor.fetchall()
    # A sweep over start (+1) and end (-1) events; an end sorts before a start at the same moment
    # so back-to-back runs do not count as overlapping.
    events = sorted(
        [(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
        key=lambda e: (e[0], e[1]),
    )
    level = 0
    index = 0
    while index < len(events) and events[index][0] < since:  # runs already going at `since`
        level += events[index][1]
        index += 1
    peaks = [0] * buckets
    for bucket in range(buckets):
        bucket_end = since + step * (bucket + 1)
        peak = level
        while index < len(events) and events[index][0] < bucket_end:
            level += events[index][1]
            peak = max(peak, level)
            index += 1
        peaks[bucket] = peak
    return [(since + step * bucket, peaks[bucket]) for bucket in range(buckets)]


@dataclass
class Forecast:
    start: datetime
    hours: int
    starts: list[tuple[datetime, str]]  # (moment, job), ascending
    per_hour: list[int] = field(default_factory=list)
    peak_per_second: int = 0
    peak_at: list[datetime] = field(default_factory=list)


def forecast(*, now: datetime | None = None, hours: int = 24) -> Forecast:
    """Every start of the next `hours` hours from the enabled schedules' real fire times."""
    now = now or timezone.now()
    end = now + timedelta(hours=hours)
    starts: list[tuple[datetime, str]] = []
    for plan in enabled_plans():
        shift = timedelta(seconds=plan.offset)
        starts += [(b + shift, plan.name) for b in plan.cron.fire_times(now - shift, end - shift)]
    starts = sorted(s for s in starts if now <= s[0] < end)
    per_hour = [0] * hours
    for moment, _ in starts:
        per_hour[min(hours - 1, int((moment - now).total_seconds() // 3600))] += 1
    by_second = Counter(moment for moment, _ in starts)
    peak = max(by_second.values(), default=0)
    return Forecast(
        start=now,
        hours=hours,
        starts=starts,
        per_hour=per_hour,
        peak_per_second=peak,
        peak_at=sorted(m for m, c in by_second.items() if c == peak)[:5] if peak else [],
    )
