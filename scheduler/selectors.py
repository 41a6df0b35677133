"""The scheduler's read model: what the CLI, the admin, the API and the dashboard show.

- `next_starts`: the one implementation of "next start" (fire time + effective offset);
- `jobs_overview` / `JobView`: every registered job with its schedule, next starts, last run and
  statistics; `job_stats`, `last_runs`, `last_successes`, `job_backlogs`;
- `starts_per_second`, `concurrency_series`: chart series over the ledger;
- `forecast`: starts of the next hours from the enabled schedules' real fire times (counted per
  distinct cron by `scheduler.forecast`).

Statistics are computed in PostgreSQL (one grouped statement per question) so a dashboard over a
week of every-minute jobs (~120k ledger rows) stays a few queries. Definitions, also in README:

- runs: ledger rows of the window that stand for an execution (duplicates and skipped_lock
  deliveries are counted on their own);
- success rate: succeeded / (succeeded + failed + lost + missed + expired); retrying attempts
  and running or queued rows are left out until they end;
- duration: succeeded runs; lateness: beat-triggered runs (start minus slot).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Max
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from scheduler.cron import Cron, CronError
from scheduler.forecast import enabled_plan_groups, starts_ahead
from scheduler.models import JobRun
from scheduler.registry import Job, all_jobs
from scheduler.services.schedules import effective_offset


def next_starts(cron: Cron, offset: int, *, now: datetime, count: int = 5) -> list[datetime]:
    """The next `count` start moments after `now`: fire time (minute boundary) + effective offset.

    The one implementation of "next start": between a boundary and boundary + offset the start
    of that boundary is still ahead, so the search begins `offset` seconds before `now`. A cron
    beat cannot send (a row written around validation) raises CronError naming the problem.
    Cheap enough for every row of a list (`Cron.next_fire_times`: microseconds for a UTC cron).
    """
    cron.validate()  # once per distinct cron, then a cache lookup
    shift = timedelta(seconds=effective_offset(offset))
    return [boundary + shift for boundary in cron.next_fire_times(now - shift, count)]


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
    count(*) FILTER (WHERE status NOT IN (
        'duplicate', 'skipped_lock', 'refused', 'skipped_disabled', 'superseded')),
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


_LAST_RUN_SQL = """
SELECT (
    SELECT r.id FROM scheduler_jobrun r
    WHERE r.job = name AND r.duplicate_of_id IS NULL
        AND r.status NOT IN ('refused', 'skipped_disabled', 'superseded')
    ORDER BY r.slot DESC, r.attempt DESC
    LIMIT 1
)
FROM unnest(%s::text[]) AS name
"""


def last_runs(names: list[str] | None = None) -> dict[str, JobRun]:
    """The newest slot-owning run (`JobRun.SLOT_OWNERS`: no duplicate delivery, no message the
    worker turned away) of each named job (default: every registered job). Per job one walk down the
    (job, -slot) index, so a long ledger costs nothing more; DISTINCT ON read every row of it."""
    if names is None:
        names = [job.name for job in all_jobs()]
    with connection.cursor() as cursor:
        cursor.execute(_LAST_RUN_SQL, [names])
        ids = [run_id for (run_id,) in cursor.fetchall() if run_id is not None]
    return {run.job: run for run in JobRun.objects.filter(pk__in=ids)}


def last_successes() -> dict[str, datetime]:
    rows = (
        JobRun.objects.filter(status=JobRun.Status.SUCCEEDED)
        .values("job")
        .annotate(at=Max("finished_at"))
    )
    return {row["job"]: row["at"] for row in rows}


_BACKLOG_SQL = """
SELECT name, coalesce((
    SELECT CASE WHEN jsonb_typeof(r.result -> 'backlog') = 'number'
                THEN (r.result ->> 'backlog')::numeric END
    FROM scheduler_jobrun r
    WHERE r.job = name AND r.status IN ('succeeded', 'failed') AND r.duplicate_of_id IS NULL
    ORDER BY r.slot DESC, r.attempt DESC
    LIMIT 1
), 0)
FROM unnest(%s::text[]) AS name
"""


def job_backlogs(names: list[str]) -> dict[str, float]:
    """Each job's `backlog` from the result of its newest run that ran to an end (succeeded or
    failed): rows a batch left when its time budget ran out. 0 when absent or not a number.

    One statement; per job an index walk (job, -slot) that stops at the newest ended run.
    """
    with connection.cursor() as cursor:
        cursor.execute(_BACKLOG_SQL, [names])
        return {name: float(value) for name, value in cursor.fetchall()}


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
    jobs = all_jobs()
    # The jobs' own rows: other schedules (thousands, maybe) are not part of this overview.
    rows = PeriodicTask.objects.filter(name__in=[job.name for job in jobs])
    tasks = {t.name: t for t in rows.select_related("crontab", "job_schedule")}
    stats = job_stats(since=now - window, until=now)
    last = last_runs([job.name for job in jobs])
    views = []
    for job in jobs:
        task = tasks.get(job.name)
        cron = offset = None
        upcoming: list[datetime] = []
        if task is not None and task.crontab_id:
            offset = getattr(getattr(task, "job_schedule", None), "offset_seconds", 0)
            try:
                cron = Cron.from_model(task.crontab)
                cron.validate()
                if task.enabled:
                    upcoming = next_starts(cron, offset, now=now, count=5)
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
    # Unix seconds as float8: parsing ~35k timestamps a day of runs from text cost most of the
    # dashboard's time; floats keep microseconds and equal moments stay equal.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT extract(epoch FROM started_at)::float8, "
            "extract(epoch FROM coalesce(finished_at, %s))::float8 FROM scheduler_jobrun "
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
    start = since.timestamp()
    while index < len(events) and events[index][0] < start:  # runs already going at `since`
        level += events[index][1]
        index += 1
    peaks = [0] * buckets
    for bucket in range(buckets):
        bucket_end = start + step.total_seconds() * (bucket + 1)
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
    total: int  # starts in the window
    per_hour: list[int] = field(default_factory=list)
    peak_per_second: int = 0
    peak_at: list[datetime] = field(default_factory=list)  # the first five peak seconds
    next_starts: list[tuple[datetime, str]] = field(default_factory=list)  # (moment, schedule)


def forecast(*, now: datetime | None = None, hours: int = 24, shown: int = 24) -> Forecast:
    """Starts of the next `hours` hours from the enabled schedules' real fire times: counted per
    distinct cron (scheduler.forecast), so 10,000 schedules cost what their few crons cost; the
    first `shown` starts are named."""
    now = now or timezone.now()
    ahead = starts_ahead(enabled_plan_groups(), now=now, seconds=hours * 3600)
    counts = ahead.per_second
    peak = max(counts, default=0)
    peak_at = []
    if peak:
        index = -1
        while len(peak_at) < 5 and (index := _find(counts, peak, index + 1)) != -1:
            peak_at.append(ahead.moment(index))
    return Forecast(
        start=now,
        hours=hours,
        total=sum(counts),
        per_hour=[sum(counts[h * 3600 : (h + 1) * 3600]) for h in range(hours)],
        peak_per_second=peak,
        peak_at=peak_at,
        next_starts=ahead.first_named(shown),
    )


def _find(values: list[int], wanted: int, start: int) -> int:
    try:
        return values.index(wanted, start)
    except ValueError:
        return -1
