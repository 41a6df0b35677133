"""Scheduler benchmarks, each measured side by side in one run.

    python -m bench scheduler [--tasks N] [--minutes M] [--skip-precision]

1. Run-path overhead: throughput of a no-op job through the full wrapper (ledger row, slot claim,
   lease, persisted result) against a bare Celery no-op without a result backend, and against a
   bare no-op with django-celery-results at default settings (a DB connection per task). Each on
   a fresh `celery worker --pool solo` subprocess with the same settings and the same broker.
2. Start precision: lateness p50/p99 of scheduled runs over M minutes of the test profile, with
   real beat and worker processes.
3. Peak simultaneous starts per second over a simulated week of the default table, with and
   without stagger.
4. Scale: with 10, 1,000 and 10,000 enabled schedules, beat's full schedule load, one tick, and
   the collision check.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench._env import servers

ROOT = Path(__file__).resolve().parent.parent


def _worker(env_extra: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "JOBSITE_JOB_MODULES": "bench.scheduler_tasks",
        "LOG_LEVEL": "WARNING",
        **env_extra,
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "jobsite",
            "worker",
            "--pool",
            "solo",
            "--queues",
            "default,long",
            "--without-mingle",
            "--without-gossip",
            "--loglevel",
            "WARNING",
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


def _throughput(
    label: str, send: Callable[[int], None], count: int, env_extra: dict[str, str], tmp: Path
) -> float:
    """Tasks per second of one worker draining `count` messages queued before it consumes."""
    import redis

    from bench.scheduler_tasks import DONE, FIRST, LAST
    from jobsite.celery import app

    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    worker = _worker({**env_extra, "BENCH_TARGET": str(count)}, tmp / f"{label}.log")
    try:
        client.delete(DONE, FIRST, LAST)
        send(3)  # warm-up: the worker is up, connected and has imported everything
        _wait(lambda: int(client.get(DONE) or 0) >= 3, worker, label, tmp)
        app.control.cancel_consumer("default", reply=True, timeout=5)
        client.delete(DONE, FIRST, LAST)
        send(count)  # queued while nobody consumes: the send loop is not measured
        app.control.add_consumer("default", reply=True, timeout=5)
        _wait(lambda: client.get(LAST) is not None, worker, label, tmp)
        elapsed = float(client.get(LAST)) - float(client.get(FIRST))
    finally:
        _stop(worker)
    return (count - 1) / elapsed


def _wait(done: Callable[[], bool], worker: subprocess.Popen[bytes], label: str, tmp: Path) -> None:
    started = time.perf_counter()
    while not done():
        if worker.poll() is not None or time.perf_counter() - started > 600:
            raise RuntimeError(f"{label}: worker stopped or stalled; see {tmp / label}.log")
        time.sleep(0.02)


def run_path_overhead(count: int, tmp: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from jobsite.celery import app

    base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    counter = {"n": 0}

    def send_bare(n: int) -> None:
        for _ in range(n):
            app.send_task("bench.bare_noop", queue="default")

    def send_stored(n: int) -> None:
        for _ in range(n):
            app.send_task("bench.stored_noop", queue="default")

    def send_job(n: int) -> None:
        for _ in range(n):
            counter["n"] += 1
            slot = base + timedelta(seconds=counter["n"])
            app.send_task(
                "bench.job_noop",
                queue="default",
                kwargs={"slot": slot.isoformat(), "trigger": "api"},
            )

    rates = {
        "bare Celery, no result backend": _throughput("bare", send_bare, count, {}, tmp),
        "bare Celery, django-db results, default settings": _throughput(
            "stored", send_stored, count, {"CELERY_DB_REUSE_MAX": "0"}, tmp
        ),
        "jobsite run path (ledger, claim, lease, result)": _throughput(
            "job", send_job, count, {}, tmp
        ),
    }
    ours = rates["jobsite run path (ledger, claim, lease, result)"]
    print(f"{'setup':52} {'tasks/s':>8} {'ours / it':>10}")
    for label, rate in rates.items():
        print(f"{label:52} {rate:8.0f} {ours / rate:10.2f}")


def start_precision(minutes: float, tmp: Path) -> None:
    from django.utils import timezone

    from scheduler.models import JobRun
    from scheduler.services.schedules import schedules_apply

    schedules_apply(profile="test", reset=True)
    from django_celery_beat.models import PeriodicTask

    PeriodicTask.objects.filter(name="bench-noop").update(enabled=False)
    started = timezone.now()
    env = {**os.environ, "LOG_LEVEL": "WARNING"}
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "jobsite", "beat", "--pidfile", str(tmp / "b.pid")],
        cwd=ROOT,
        env=env,
        stdout=(tmp / "beat.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "jobsite",
            "worker",
            "--queues",
            "default,long",
            "--concurrency",
            "2",
        ],
        cwd=ROOT,
        env=env,
        stdout=(tmp / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        time.sleep(minutes * 60 + 5)
    finally:
        _stop(beat)
        _stop(worker)
    late = sorted(
        JobRun.objects.filter(
            trigger="beat", created_at__gte=started, lateness_ms__isnull=False
        ).values_list("lateness_ms", flat=True)
    )
    if not late:
        print("start precision: no scheduled runs recorded (see beat.log)")
        return
    p99 = late[min(len(late) - 1, int(len(late) * 0.99))]
    print(
        f"start lateness over {minutes} min, {len(late)} scheduled runs: "
        f"p50 {statistics.median(late):.0f} ms, p99 {p99} ms, max {late[-1]} ms"
    )


def peak_per_second() -> None:
    from scheduler.collisions import Planned, analyse
    from scheduler.cron import Cron
    from scheduler.registry import all_jobs

    jobs = [job for job in all_jobs() if not job.name.startswith("bench-")]
    for stagger in (True, False):
        plans = [Planned(j.name, Cron.parse(j.cron), j.offset if stagger else 0) for j in jobs]
        report = analyse(plans)
        print(
            f"peak starts per second over a week, {len(jobs)} jobs, stagger "
            f"{'on ' if stagger else 'off'}: {report.peak}"
            + (
                f" (at {', '.join(f'{m:%a %H:%M:%S}' for m in report.peak_at[:3])})"
                if not stagger
                else ""
            )
        )


def scale() -> None:
    from django.utils import timezone
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    from jobsite.celery import app
    from scheduler.collisions import analyse
    from scheduler.models import JobSchedule
    from scheduler.schedulers import JobScheduler
    from scheduler.services.schedules import enabled_plans

    crons = [
        CrontabSchedule.objects.get_or_create(minute=m, hour=h)[0]
        for m, h in (("*", "*"), ("*/5", "*"), ("0", "*"), ("30", "3"))
    ]
    print(f"{'schedules':>9} {'full load ms':>13} {'tick ms':>8} {'collision check ms':>19}")
    for count in (10, 1000, 10000):
        PeriodicTask.objects.all().delete()
        tasks = PeriodicTask.objects.bulk_create(
            PeriodicTask(
                name=f"scale-{i}",
                task="bench.job_noop",
                crontab=crons[i % len(crons)],
                kwargs="{}",
                enabled=True,
            )
            for i in range(count)
        )
        JobSchedule.objects.bulk_create(
            JobSchedule(periodic_task=t, offset_seconds=i % 60, tracked_since=timezone.now())
            for i, t in enumerate(tasks)
        )
        scheduler = JobScheduler(app=app, lazy=True)
        started = time.perf_counter()
        scheduler._schedule = scheduler.all_as_schedule()
        load_ms = (time.perf_counter() - started) * 1000
        scheduler._initial_read = False
        scheduler._last_full_sync = __import__("datetime").datetime.now()
        scheduler.populate_heap()
        ticks = []
        for _ in range(20):
            started = time.perf_counter()
            scheduler.is_due(scheduler._heap[0][2])
            scheduler.schedule_changed()
            ticks.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        analyse(enabled_plans())
        check_ms = (time.perf_counter() - started) * 1000
        print(f"{count:9} {load_ms:13.0f} {statistics.median(ticks):8.2f} {check_ms:19.0f}")
    PeriodicTask.objects.all().delete()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="make bench ARGS='scheduler ...'")
    parser.add_argument("--tasks", type=int, default=2000, help="messages per throughput run")
    parser.add_argument("--minutes", type=float, default=3, help="start-precision window")
    parser.add_argument("--skip-precision", action="store_true")
    parser.add_argument(
        "--only", choices=["overhead", "peak", "scale", "precision"], help="run one part only"
    )
    args = parser.parse_args(argv)
    os.environ["JOBSITE_JOB_MODULES"] = "bench.scheduler_tasks"

    def wanted(part: str) -> bool:
        return args.only in (None, part)

    with servers(), tempfile.TemporaryDirectory(prefix="jobsite-bench-") as tmp:
        if wanted("overhead"):
            print("-- run-path overhead")
            run_path_overhead(args.tasks, Path(tmp))
        if wanted("peak"):
            print("-- peak simultaneous starts")
            peak_per_second()
        if wanted("scale"):
            print("-- scale")
            scale()
        if wanted("precision") and not args.skip_precision:
            print("-- start precision")
            start_precision(args.minutes, Path(tmp))
