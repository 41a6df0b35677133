"""Prometheus metrics, collected from PostgreSQL and Redis at scrape time.

The web process does not see runs happen (workers do), so this is an exporter: every scrape
reads the ledger (one grouped statement over the last hour, one for last successes) and the
broker's queue lengths. Served at /metrics to staff only (a DRF token in the scrape config).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from prometheus_client.core import CollectorRegistry, GaugeMetricFamily
from prometheus_client.registry import Collector

from ops.health import beat_liveness
from ops.models import Incident
from ops.selectors import job_backlogs, job_stats, last_successes
from scheduler.models import JobRun
from scheduler.registry import QUEUES, all_jobs

WINDOW = timedelta(hours=1)
# kombu's Redis transport keeps one list per priority step: "queue", "queue\x06\x163", ...
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)


def queue_names() -> list[str]:
    return sorted({*QUEUES, settings.CELERY_TASK_DEFAULT_QUEUE})


def queue_depths() -> tuple[dict[str, int], int]:
    """Messages waiting in each Celery queue (all priority lists), and messages delivered to a
    worker but not acknowledged yet (countdown messages waiting for their offset are among them).
    """
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=2)
    try:
        pipe = client.pipeline()
        names = queue_names()
        for name in names:
            for step in PRIORITY_STEPS:
                pipe.llen(name if step == 0 else f"{name}{PRIORITY_SEP}{step}")
        pipe.hlen("unacked")
        counts = pipe.execute()
    finally:
        client.close()
    per_step = len(PRIORITY_STEPS)
    depths = {name: sum(counts[i * per_step : (i + 1) * per_step]) for i, name in enumerate(names)}
    return depths, counts[-1]


class JobsCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = timezone.now()
        jobs = [job.name for job in all_jobs()]
        runs = GaugeMetricFamily(
            "jobsite_job_runs_last_hour",
            "Ledger rows of the last hour by job and status (skipped_lock, missed, ... included).",
            labels=["job", "status"],
        )
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT job, status, count(*) FROM scheduler_jobrun WHERE slot >= %s "
                "GROUP BY job, status",
                [now - WINDOW],
            )
            counted = {(job, status): n for job, status, n in cursor.fetchall()}
        for job in jobs:
            for status in JobRun.Status.values:
                runs.add_metric([job, status], counted.get((job, status), 0))
        yield runs

        stats = job_stats(since=now - WINDOW, until=now)
        duration = GaugeMetricFamily(
            "jobsite_job_duration_seconds",
            "Duration of succeeded runs in the last hour, by quantile.",
            labels=["job", "quantile"],
        )
        lateness = GaugeMetricFamily(
            "jobsite_job_lateness_seconds",
            "Start minus slot of beat-triggered runs in the last hour (p99).",
            labels=["job", "quantile"],
        )
        for job, stat in stats.items():
            for quantile, value in (("0.5", stat.duration_p50_ms), ("0.95", stat.duration_p95_ms)):
                if value is not None:
                    duration.add_metric([job, quantile], value / 1000)
            if stat.lateness_p99_ms is not None:
                lateness.add_metric([job, "0.99"], stat.lateness_p99_ms / 1000)
        yield duration
        yield lateness

        success = GaugeMetricFamily(
            "jobsite_job_last_success_timestamp_seconds",
            "Unix time of the job's newest succeeded run.",
            labels=["job"],
        )
        for job, moment in last_successes().items():
            if moment is not None:
                success.add_metric([job], moment.timestamp())
        yield success

        enabled = GaugeMetricFamily(
            "jobsite_job_enabled", "1 when the job's schedule is enabled.", labels=["job"]
        )
        on = set(  # the jobs' rows only: thousands of other schedules cost nothing here
            PeriodicTask.objects.filter(enabled=True, name__in=jobs).values_list("name", flat=True)
        )
        for job in jobs:
            enabled.add_metric([job], 1 if job in on else 0)
        yield enabled

        incidents = GaugeMetricFamily(
            "jobsite_job_open_incidents",
            "Open alert incidents (ops.alerts) by job and kind: failures, missed, late.",
            labels=["job", "kind"],
        )
        for job, kind in Incident.objects.filter(resolved_at=None).values_list("job", "kind"):
            incidents.add_metric([job, kind], 1)
        yield incidents

        backlog = GaugeMetricFamily(
            "jobsite_job_backlog",
            "Rows the job's newest finished run left for the next (result.backlog; 0 if none).",
            labels=["job"],
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

        depth = GaugeMetricFamily(
            "jobsite_celery_queue_length", "Messages waiting in a Celery queue.", labels=["queue"]
        )
        up = GaugeMetricFamily("jobsite_broker_up", "1 when the broker answered this scrape.")
        try:
            depths, unacked = queue_depths()
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


def metrics_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobsCollector())
    return registry
