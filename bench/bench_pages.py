"""Staff pages and health at scale: N enabled schedules (10,000 by default, the README's size).

    python -m bench pages [--schedules N] [--rounds R] [--ledger-days D]

Seeds the twelve jobs' schedules (production crons) plus N - 12 schedules of other tasks on a
realistic spread of crons (every few minutes, hourly, daily at each hour, weekly) and offsets, and
a ledger of D days of the jobs' runs every minute (7 days: ~121k rows; 58 days: ~1M, production's
30-day retention with room); then requests each page in-process through Django's test client
(the full middleware stack, no network): the first request, then the median of R more, and how
far the process's peak RSS rose over them (/proc/self/clear_refs resets the peak before each
page). Targets from issue 14: /healthz under 50 ms; the dashboard, the first page of
/api/schedules/, /api/jobs/ and /metrics each under 1 s and 100 MB. Also beat's full schedule
load (all_as_schedule) and one heartbeat stamp at that size.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from bench._env import servers
from devtools.gendocs import Block, table

PAGES = [
    # (label, path, target ms)
    ("/healthz/ready", "/healthz/ready", 50),
    ("/healthz/beat", "/healthz/beat", 50),
    ("/healthz", "/healthz", 50),
    ("dashboard (24h)", "/admin/jobs-dashboard/", 1000),
    ("/api/schedules/ page 1", "/api/schedules/", 1000),
    ("/api/jobs/", "/api/jobs/", 1000),
    ("/metrics", "/metrics", 1000),
]
RSS_TARGET_MB = 100
OTHER_CRONS = (
    [("*/5", "*"), ("*/10", "*"), ("*/15", "*"), ("0", "*"), ("30", "*"), ("*", "*")]
    + [("0", str(hour)) for hour in range(24)]
    + [("15", str(hour)) for hour in range(0, 24, 6)]
)


def seed(count: int, ledger_days: int) -> None:
    from django.db import connection
    from django.utils import timezone
    from django_celery_beat.models import PeriodicTask, PeriodicTasks

    from scheduler.audit import Actor
    from scheduler.cron import Cron
    from scheduler.models import JobSchedule
    from scheduler.registry import all_jobs
    from scheduler.services.writes import crontab_for, schedules_apply

    with connection.cursor() as cursor:
        # A scratch database (as every benchmark assumes); the ORM's delete of a 120k-row ledger
        # would take minutes.
        cursor.execute(
            "TRUNCATE scheduler_jobrun, scheduler_jobruntally, django_celery_beat_periodictask, "
            "scheduler_processheartbeat CASCADE"
        )
    schedules_apply(actor=Actor.system("bench"), profile="production", reset=True)
    crons = [
        crontab_for(Cron(m, h, "*", "*", dow))
        for m, h, dow in [(m, h, "*") for m, h in OTHER_CRONS] + [("0", "6", "1")]
    ]
    others = count - PeriodicTask.objects.count()
    # Weighted as a platform's own tasks are: mostly periodic syncs and reports, a few per minute.
    tasks = PeriodicTask.objects.bulk_create(
        PeriodicTask(
            name=f"tenant-{i:05d}-sync",
            task="celery.backend_cleanup",  # registered in every Celery app: beat loads it
            crontab=crons[(i * 7) % len(crons)],
            kwargs="{}",
            enabled=True,
        )
        for i in range(others)
    )
    JobSchedule.objects.bulk_create(
        JobSchedule(periodic_task=t, offset_seconds=i % 60, tracked_since=timezone.now())
        for i, t in enumerate(tasks)
    )
    PeriodicTasks.update_changed()
    jobs = [(job.name, job.offset) for job in all_jobs()]
    with connection.cursor() as cursor:
        # Every job every minute for `ledger_days` (more than production runs): the ledger the
        # dashboard's statistics, charts and /metrics read.
        cursor.execute(
            """
            INSERT INTO scheduler_jobrun (job, slot, attempt, status, trigger, reason, task_id,
                worker, created_at, started_at, finished_at, duration_ms, lateness_ms, result,
                error, traceback)
            SELECT j.name, m + make_interval(secs => j.offset_s), 1,
                CASE WHEN random() < 0.01 THEN 'failed' ELSE 'succeeded' END, 'beat', '',
                md5(j.name || m::text), 'bench@host', m, m + make_interval(secs => j.offset_s),
                m + make_interval(secs => j.offset_s + 0.2), 200, 15,
                CASE WHEN j.name = 'cleanup' THEN '{"backlog": 1200}'::jsonb ELSE '{}'::jsonb END,
                '', ''
            FROM unnest(%s::text[], %s::int[]) AS j(name, offset_s),
                generate_series(date_trunc('minute', now()) - make_interval(days => %s),
                                date_trunc('minute', now()) - interval '1 minute',
                                interval '1 minute') AS m
            """,
            [[n for n, _ in jobs], [o for _, o in jobs], ledger_days],
        )
        cursor.execute("ANALYZE scheduler_jobrun")
        cursor.execute("ANALYZE django_celery_beat_periodictask")


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(request: Callable[[], object], rounds: int) -> tuple[float, float, float]:
    """(first ms, median ms of `rounds` more, peak RSS growth MB over all of them)."""
    _reset_peak()
    before = _rss_kb("VmRSS")
    started = time.perf_counter()
    request()
    first = (time.perf_counter() - started) * 1000
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        request()
        times.append((time.perf_counter() - started) * 1000)
    grown = max(0, _rss_kb("VmHWM") - before) / 1024
    return first, statistics.median(times), grown


def main(argv: list[str]) -> dict[str, list[Block]]:
    parser = argparse.ArgumentParser(prog="make bench ARGS='pages ...'")
    parser.add_argument("--schedules", type=int, default=10_000, help="enabled schedules")
    parser.add_argument("--rounds", type=int, default=5, help="requests per page after the first")
    parser.add_argument("--ledger-days", type=int, default=7, help="days of runs in the ledger")
    args = parser.parse_args(argv)

    with servers():
        from django.contrib.auth import get_user_model
        from django.test import Client
        from django.test.utils import setup_test_environment

        from jobsite.celery import app
        from scheduler.heartbeat import beat_heartbeat_stamp
        from scheduler.schedulers import JobScheduler

        setup_test_environment()  # the test client's host name is allowed; nothing else changes
        started = time.perf_counter()
        seed(args.schedules, args.ledger_days)
        print(
            f"-- {args.schedules} enabled schedules, {args.ledger_days} days of ledger "
            f"(seeded in {time.perf_counter() - started:.1f} s); peak-RSS reset "
            f"{'works' if _reset_peak() else 'is unavailable (growth reads low)'}"
        )
        beat_heartbeat_stamp(force=True)  # beat is alive, as in production
        user = get_user_model().objects.create_superuser(f"bench-{time.time_ns()}", password="x")
        client = Client()
        client.force_login(user)

        rows: list[list[object]] = []
        print(
            f"{'page':<24} {'first ms':>9} {'median ms':>10} {'target ms':>10} "
            f"{'peak RSS +MB':>13} {'target MB':>10}  status"
        )
        for label, path, target in PAGES:
            statuses: set[int] = set()

            def get(path: str = path, statuses: set[int] = statuses) -> None:
                response = client.get(path, secure=True)
                statuses.add(response.status_code)

            first, median, grown = measure(get, args.rounds)
            verdict = "ok" if median < target and grown < RSS_TARGET_MB else "OVER"
            print(
                f"{label:<24} {first:9.1f} {median:10.1f} {target:10} {grown:13.1f} "
                f"{RSS_TARGET_MB:10}  {','.join(map(str, sorted(statuses)))} {verdict}",
                flush=True,
            )
            status = f"{','.join(map(str, sorted(statuses)))} {verdict}"
            rows.append(
                [
                    label,
                    f"{first:.1f}",
                    f"{median:.1f}",
                    target,
                    f"{grown:.1f}",
                    RSS_TARGET_MB,
                    status,
                ]
            )

        scheduler = JobScheduler(app=app, lazy=True)
        first, median, grown = measure(scheduler.all_as_schedule, 2)
        entries = len(scheduler.all_as_schedule())
        print(
            f"{'beat all_as_schedule()':<24} {first:9.1f} {median:10.1f} {'-':>10} {grown:13.1f}"
            f" {'-':>10}  {entries} entries"
        )
        load = ["beat all_as_schedule()", f"{first:.1f}", f"{median:.1f}", "-", f"{grown:.1f}"]
        rows.append([*load, "-", f"{entries} entries"])
        _, median, _ = measure(lambda: beat_heartbeat_stamp(force=True), 20)
        print(f"{'beat heartbeat stamp':<24} {'':9} {median:10.2f} {'-':>10}")
        rows.append(["beat heartbeat stamp", "", f"{median:.2f}", "-", "", "-", ""])
    header = ["page", "first ms", "median ms", "target ms", "peak RSS +MB", "target MB", "status"]
    caption = (
        f"{args.schedules:,} enabled schedules, {args.ledger_days} days of ledger; median of "
        f"{args.rounds} requests after the first, in-process through Django's test client."
    )
    return {"pages": [table(header, rows, caption)]}
