"""Prometheus metrics, collected from PostgreSQL and Redis at scrape time.

The web process does not see runs happen (workers do), so this is an exporter: every scrape
reads the ledger's running totals (scheduler.tally: counters and histograms that pruning never
lowers, ~100 rows whatever the ledger's size), a few per-job index walks, and the broker's queue
lengths. Served at /metrics to holders of monitoring.view_metrics (a DRF token in the scrape
config).

The per-job label is `job_name`: `job` and `instance` belong to Prometheus, which renames a
scraped `job` to `exported_job`. Every job has a sample in every per-job family, zeros included,
so `increase()` sees a series' first run and an alert's "nothing open" is a 0, not an absence.
The rules that read these are deploy/prometheus/rules.yml.
"""

from __future__ import annotations

from collections.abc import Iterator

import redis
from django.conf import settings
from django_celery_beat.models import PeriodicTask
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from monitoring.liveness import beat_liveness, watchdog_liveness
from monitoring.models import JOB_KINDS, OUTAGE_JOB, OUTAGE_KINDS, QUEUE_PREFIX, Incident
from monitoring.queues import broker_counts, queue_names
from scheduler.models import JobRun
from scheduler.registry import all_jobs
from scheduler.selectors import job_backlogs
from scheduler.tally import Histogram, job_tallies

# Statuses a run ends in (every status but queued and running): each job has a counter sample
# for each, 0 until a run ends so.
UNFINISHED = {JobRun.Status.QUEUED, JobRun.Status.RUNNING}


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    """Cumulative (le, count) pairs in seconds, ending with +Inf = the count."""
    pairs = [
        (f"{bound / 1000:g}", float(count))
        for bound, count in zip(histogram.bounds_ms, histogram.cumulative, strict=True)
    ]
    return [*pairs, ("+Inf", float(histogram.count))]


class JobsCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        jobs = [job.name for job in all_jobs()]
        tallies = job_tallies(jobs)
        statuses = [status for status in JobRun.Status.values if status not in UNFINISHED]

        runs = CounterMetricFamily(
            "jobsite_job_runs",
            "Ledger rows that ended in each status, ever (pruning does not lower it): succeeded, "
            "failed, retrying, lost, missed, expired, skipped_lock, duplicate, ...",
            labels=["job_name", "status"],
        )
        duration = HistogramMetricFamily(
            "jobsite_job_duration_seconds",
            "Duration of runs that ran (succeeded, failed, retrying, ...), since the ledger began.",
            labels=["job_name"],
        )
        lateness = HistogramMetricFamily(
            "jobsite_job_lateness_seconds",
            "Start minus slot of beat-sent runs, since the ledger began.",
            labels=["job_name"],
        )
        success = GaugeMetricFamily(
            "jobsite_job_last_success_timestamp_seconds",
            "Unix time the job's newest succeeded run finished (no sample before its first).",
            labels=["job_name"],
        )
        for job in jobs:
            tally = tallies[job]
            for status in sorted({*statuses, *tally.runs}):
                runs.add_metric([job, status], tally.runs.get(status, 0))
            duration.add_metric(
                [job], _buckets(tally.duration), sum_value=tally.duration.sum_ms / 1000
            )
            lateness.add_metric(
                [job], _buckets(tally.lateness), sum_value=tally.lateness.sum_ms / 1000
            )
            if tally.last_success is not None:
                success.add_metric([job], tally.last_success.timestamp())
        yield runs
        yield duration
        yield lateness
        yield success

        enabled = GaugeMetricFamily(
            "jobsite_job_enabled", "1 when the job's schedule is enabled.", labels=["job_name"]
        )
        on = set(  # the jobs' rows only: thousands of other schedules cost nothing here
            PeriodicTask.objects.filter(enabled=True, name__in=jobs).values_list("name", flat=True)
        )
        for job in jobs:
            enabled.add_metric([job], 1 if job in on else 0)
        yield enabled

        incidents = GaugeMetricFamily(
            "jobsite_job_open_incidents",
            'Open alert incidents by job and kind (outages: job_name="*"); 0 when none is open.',
            labels=["job_name", "kind"],
        )
        open_now = set(Incident.objects.filter(resolved_at=None).values_list("job", "kind"))
        per_job = {
            (job, kind)
            for job, kind in open_now
            if job != OUTAGE_JOB and not job.startswith(QUEUE_PREFIX)
        }
        kinds = {*JOB_KINDS, *(kind for _, kind in per_job)}
        for job in sorted({*jobs, *(job for job, _ in per_job)}):
            for kind in sorted(kinds):
                incidents.add_metric([job, kind], 1 if (job, kind) in open_now else 0)
        # Outages of the platform (beat down, broker down) are one series each, job_name="*".
        for kind in OUTAGE_KINDS:
            incidents.add_metric([OUTAGE_JOB, kind], 1 if (OUTAGE_JOB, kind) in open_now else 0)
        yield incidents

        backlog = GaugeMetricFamily(
            "jobsite_job_backlog",
            "Rows the job's newest finished run left for the next (result.backlog; 0 if none).",
            labels=["job_name"],
        )
        for job, rows in job_backlogs(jobs).items():
            backlog.add_metric([job], rows)
        yield backlog

        beat = beat_liveness()
        beat_up = GaugeMetricFamily(
            "jobsite_beat_up", "1 while beat's heartbeat is newer than HEALTH_BEAT_DOWN_AFTER."
        )
        beat_up.add_metric([], 1 if beat.healthy else 0)
        yield beat_up
        if beat.last_seen is not None:
            seen = GaugeMetricFamily(
                "jobsite_beat_last_seen_timestamp_seconds",
                "Beat's newest heartbeat (Unix time); only beat itself advances it.",
            )
            seen.add_metric([], beat.last_seen.timestamp())
            yield seen

        # Who watches the watchdog: this scrape reads its heartbeat (stamped every pass), and
        # Prometheus pages on it (WatchdogDown), so its death does not go unnoticed.
        watchdog = watchdog_liveness()
        watchdog_up = GaugeMetricFamily(
            "jobsite_watchdog_up",
            "1 while the watchdog's heartbeat (one per pass) is newer than "
            "HEALTH_WATCHDOG_DOWN_AFTER.",
        )
        watchdog_up.add_metric([], 1 if watchdog.healthy else 0)
        yield watchdog_up
        if watchdog.last_seen is not None:
            seen = GaugeMetricFamily(
                "jobsite_watchdog_last_seen_timestamp_seconds",
                "The watchdog's newest heartbeat (Unix time); only the watchdog advances it.",
            )
            seen.add_metric([], watchdog.last_seen.timestamp())
            yield seen

        depth = GaugeMetricFamily(
            "jobsite_celery_queue_length", "Messages waiting in a Celery queue.", labels=["queue"]
        )
        up = GaugeMetricFamily("jobsite_broker_up", "1 when the broker answered this scrape.")
        try:
            depths, unacked, workers = broker_counts(settings.CELERY_BROKER_URL)
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        for name, count in depths.items():
            depth.add_metric([name], count)
        yield depth
        reserved = GaugeMetricFamily(
            "jobsite_celery_unacked_messages",
            "Messages delivered to workers and not acknowledged (running or waiting for ETA).",
        )
        reserved.add_metric([], unacked)
        yield reserved
        # Counted by the watchdog (a broadcast to the workers costs a second, too much for a
        # scrape); no samples while the watchdog is down (jobsite_watchdog_up says so).
        if workers:
            consumers = GaugeMetricFamily(
                "jobsite_queue_workers",
                "Workers consuming the queue at the watchdog's last pass.",
                labels=["queue"],
            )
            for name in queue_names():
                consumers.add_metric([name], workers.get(name, 0))
            yield consumers


def metrics_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobsCollector())
    return registry
