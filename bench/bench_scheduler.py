"""Scheduler benchmarks, each measured side by side in one run.

    python -m bench scheduler [--only PART] [--tasks N] [--rounds R] [--prefetch P]
        [--no-events] [--pool solo|prefork] [--concurrency C] [--minutes M] [--skip-precision]

1. Run-path overhead: throughput of a no-op job through the full wrapper (ledger row, slot claim,
   lease, persisted result) against a bare Celery no-op without a result backend, and against a
   bare no-op with django-celery-results at default settings (a DB connection per task). Three
   live workers with the same command line, settings and broker, drained in turn for R
   interleaved rounds; the median ratio and its range are reported. `--baseline DIR` adds a
   fourth worker running the same job from another checkout (e.g. `git archive <commit>`
   unpacked in DIR): the run path before and after a change, side by side.
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
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench._env import servers
from devtools.gendocs import Block, table

ROOT = Path(__file__).resolve().parent.parent


VARIANTS = {
    # key: (label, task name, worker environment beyond the shared settings)
    "bare": ("bare Celery no-op, no result backend", "bench.bare_noop", {}),
    "stored": (
        "bare Celery no-op, django-celery-results at default settings",
        "bench.stored_noop",
        # Celery's default: no CELERY_DB_REUSE_MAX, so a new PostgreSQL connection per task.
        {"CELERY_DB_REUSE_MAX": "0"},
    ),
    "job": ("jobsite run path (claim, lease, fenced finish, result)", "bench.job_noop", {}),
}
# What jobsite's throughput should be at least, as a fraction of each baseline's (issue 12).
TARGETS = {"bare": 0.4, "stored": 2.0}


def _worker(
    key: str, env_extra: dict[str, str], worker_args: list[str], log: Path, cwd: Path = ROOT
) -> subprocess.Popen[bytes]:
    """A worker on queue bench-`key`, importing jobsite from `cwd` (`python -m` puts it first
    on sys.path; the project is not installed in the virtualenv)."""
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
            "--hostname",
            f"bench-{key}@%h",
            "--queues",
            f"bench-{key}",
            "--without-mingle",
            "--without-gossip",
            "--loglevel",
            "WARNING",
            *worker_args,
        ],
        cwd=cwd,
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


def _wait(done: Callable[[], bool], workers: dict[str, subprocess.Popen[bytes]], tmp: Path) -> None:
    started = time.perf_counter()
    while not done():
        dead = [key for key, worker in workers.items() if worker.poll() is not None]
        if dead or time.perf_counter() - started > 600:
            raise RuntimeError(f"worker {dead or 'stalled'}: see the logs in {tmp}")
        time.sleep(0.02)


class _Senders:
    """Queue n messages of one variant; job messages get distinct slots (one run per slot).

    A job message is what beat sends: a `beat` trigger for a fire time of the job's schedule
    (every minute, offset 0), which the worker checks before it runs (from its second message
    on, inside the claim statement: scheduler.own_schedule). Slots are distinct past minutes
    within the bench job's starting deadline (bench.scheduler_tasks).
    """

    def __init__(self) -> None:
        from datetime import UTC, datetime

        from django_celery_beat.models import PeriodicTask

        from bench.scheduler_tasks import SLOTS_SINCE
        from scheduler.cron import Cron
        from scheduler.models import JobRun, JobSchedule
        from scheduler.services.writes import crontab_for

        # The slots below repeat from one run to the next within SLOTS_SINCE; on a database that
        # outlives the run (DATABASE_URL set) an earlier run's rows would make every job message
        # a duplicate that never reaches the job, and the bench would wait for it in vain.
        JobRun.objects.filter(job="bench-noop").delete()
        now = datetime.now(UTC)
        self.base = now.replace(second=0, microsecond=0) - SLOTS_SINCE
        self.latest = now
        task, _ = PeriodicTask.objects.update_or_create(
            name="bench-noop",
            # enabled: the start-precision part disables it, and a job message for a disabled
            # schedule is recorded skipped without running (a later run on the same database
            # then waited for completions that never came).
            defaults={
                "task": "bench.job_noop",
                "crontab": crontab_for(Cron.parse("* * * * *")),
                "enabled": True,
            },
        )
        JobSchedule.objects.update_or_create(
            periodic_task=task, defaults={"offset_seconds": 0, "tracked_since": now}
        )
        self.sent = 0

    def send(self, key: str, n: int) -> None:
        from datetime import timedelta

        from jobsite.celery import app

        task = VARIANTS["job" if key.startswith("job") else key][1]
        with app.producer_or_acquire() as producer:
            for _ in range(n):
                kwargs = {}
                if key.startswith("job"):
                    self.sent += 1
                    slot = self.base + timedelta(minutes=self.sent)
                    assert slot <= self.latest, "more job messages than minutes in SLOTS_SINCE"
                    kwargs = {"slot": slot.isoformat(), "trigger": "beat"}
                app.send_task(
                    task,
                    queue=f"bench-{key}",
                    kwargs=kwargs,
                    producer=producer,
                    # send_task() cannot see the task's ignore_result and writes False into the
                    # message, which the worker obeys: without this the "bare" task would store
                    # a STARTED and a SUCCESS row per message (as it did before 2026-11-23).
                    ignore_result=key == "bare",
                )


def run_path_overhead(
    count: int,
    rounds: int,
    worker_args: list[str],
    events: bool,
    tmp: Path,
    baseline: Path | None = None,
) -> list[Block]:
    """All variants (three, four with a baseline) on live workers with the same settings and
    broker, interleaved.

    One worker per variant starts once (same command line; only the django-db baseline drops
    connection reuse, which is what "default settings" means) and consumes nothing between
    measurements. Each round, in a rotating order, `count` messages are queued while nobody
    consumes, one worker is switched on, and the time from its first to its last completion is
    taken inside the worker. Ratios are computed within each round, so drift between rounds
    (other load on the machine) cancels; the report gives their median and range.
    """
    import redis

    from bench.scheduler_tasks import DONE, FIRST, LAST
    from jobsite.celery import app

    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    load_before = os.getloadavg()[0]
    senders = _Senders()
    variants = dict(VARIANTS)
    if baseline is not None:  # the same job, from the other checkout
        variants["job-base"] = (
            "the same run path from the --baseline checkout",
            "bench.job_noop",
            {},
        )
    keys = list(variants)
    workers: dict[str, subprocess.Popen[bytes]] = {}
    hosts = {key: f"bench-{key}@{socket.gethostname()}" for key in keys}

    def drain(key: str, n: int) -> float:
        client.delete(DONE, FIRST, LAST)
        senders.send(key, n)  # queued while nobody consumes: the send loop is not measured
        app.control.add_consumer(f"bench-{key}", destination=[hosts[key]], reply=True, timeout=10)
        _wait(lambda: int(client.get(DONE) or 0) >= n and client.get(LAST), workers, tmp)
        app.control.cancel_consumer(
            f"bench-{key}", destination=[hosts[key]], reply=True, timeout=10
        )
        return (n - 1) / (float(client.get(LAST)) - float(client.get(FIRST)))

    try:
        for key in keys:
            env = {**variants[key][2], "BENCH_TARGET": str(count)}
            cwd = baseline if key == "job-base" and baseline is not None else ROOT
            workers[key] = _worker(key, env, worker_args, tmp / f"worker-{key}.log", cwd)
        for key in keys:
            # Up, connected, everything imported; then it stops consuming until its turn.
            _wait(lambda k=key: bool(app.control.ping([hosts[k]], timeout=1)), workers, tmp)
            client.delete(DONE, FIRST, LAST)
            senders.send(key, 3)
            _wait(lambda: int(client.get(DONE) or 0) >= 3, workers, tmp)
            app.control.cancel_consumer(
                f"bench-{key}", destination=[hosts[key]], reply=True, timeout=10
            )
        if not events:
            app.control.disable_events(destination=list(hosts.values()))
        rates: dict[str, list[float]] = {key: [] for key in keys}
        for r in range(rounds):
            for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
                rates[key].append(drain(key, count))
            print(
                f"  round {r + 1}: "
                + ", ".join(f"{key} {rates[key][-1]:.0f}/s" for key in keys)
                + f"; job/bare {rates['job'][-1] / rates['bare'][-1]:.2f}"
                + f", job/stored {rates['job'][-1] / rates['stored'][-1]:.2f}"
                + (
                    f", job/job-base {rates['job'][-1] / rates['job-base'][-1]:.2f}"
                    if baseline
                    else ""
                ),
                flush=True,
            )
    finally:
        for worker in workers.values():
            _stop(worker)

    def spread(values: list[float], fmt: str) -> str:
        return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"

    print(f"{'setup':62} {'tasks/s median (range)':>24} {'jobsite / it':>22}")
    rows = []
    for key in keys:
        ratios = [j / o for j, o in zip(rates["job"], rates[key], strict=True)]
        print(f"{variants[key][0]:62} {spread(rates[key], '.0f'):>24} {spread(ratios, '.2f'):>22}")
        target = TARGETS.get(key)
        met = (
            f" (target >= {target}: met in {sum(r >= target for r in ratios)} of {rounds} rounds)"
            if target is not None
            else ""
        )
        rows.append([variants[key][0], spread(rates[key], ".0f"), spread(ratios, ".2f") + met])
    return [
        table(
            ["setup", "tasks/s, median (range)", "jobsite / it, median (range)"],
            rows,
            f"{rounds} interleaved rounds x {count} no-op messages per variant; worker "
            f"{' '.join(worker_args)}, acks_late, task events {'on' if events else 'off'}; "
            f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after.",
        )
    ]


def start_precision(minutes: float, tmp: Path) -> list[Block]:
    from django.utils import timezone

    from scheduler.audit import Actor
    from scheduler.models import JobRun
    from scheduler.services.writes import schedules_apply

    schedules_apply(actor=Actor.system("bench"), profile="test", reset=True)
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
        return [table(["start lateness"], [["no scheduled runs recorded"]])]
    p99 = late[min(len(late) - 1, int(len(late) * 0.99))]
    print(
        f"start lateness over {minutes} min, {len(late)} scheduled runs: "
        f"p50 {statistics.median(late):.0f} ms, p99 {p99} ms, max {late[-1]} ms"
    )
    return [
        table(
            ["window", "scheduled runs", "lateness p50", "p99 (target <= 1 s)", "max"],
            [
                [
                    f"{minutes:g} min of the test profile, real beat + worker",
                    len(late),
                    f"{statistics.median(late):.0f} ms",
                    f"{p99} ms",
                    f"{late[-1]} ms",
                ]
            ],
        )
    ]


def peak_per_second() -> list[Block]:
    from scheduler.collisions import Planned, analyse
    from scheduler.cron import Cron
    from scheduler.registry import all_jobs

    jobs = [job for job in all_jobs() if not job.name.startswith("bench-")]
    rows = []
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
        at = ", ".join(f"{m:%a %H:%M:%S}" for m in report.peak_at[:3]) if not stagger else ""
        rows.append([f"stagger {'on' if stagger else 'off'}", len(jobs), report.peak, at])
    return [table(["default table", "jobs", "peak starts per second over a week", "at"], rows)]


def scale() -> list[Block]:
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
    rows = []
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
        rows.append(
            [
                f"{count:,}",
                f"{load_ms:.0f} ms",
                f"{statistics.median(ticks):.2f} ms",
                f"{check_ms:.0f} ms",
            ]
        )
    PeriodicTask.objects.all().delete()
    header = [
        "enabled schedules",
        "beat full schedule load",
        "one tick",
        "collision check (a week)",
    ]
    return [table(header, rows)]


def main(argv: list[str]) -> dict[str, list[Block]]:
    parser = argparse.ArgumentParser(prog="make bench ARGS='scheduler ...'")
    parser.add_argument("--tasks", type=int, default=150, help="messages per measurement")
    parser.add_argument("--rounds", type=int, default=14, help="interleaved overhead rounds")
    parser.add_argument(
        "--prefetch", type=int, default=1, help="worker prefetch multiplier (production: 1)"
    )
    parser.add_argument(
        "--no-events", action="store_true", help="workers send no task events (production: on)"
    )
    parser.add_argument("--pool", default="solo", help="worker pool (solo, prefork)")
    parser.add_argument("--concurrency", type=int, default=1, help="worker processes/threads")
    parser.add_argument("--minutes", type=float, default=3, help="start-precision window")
    parser.add_argument("--skip-precision", action="store_true")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="overhead: also run the job from this checkout of another commit, side by side",
    )
    parser.add_argument(
        "--only", choices=["overhead", "peak", "scale", "precision"], help="run one part only"
    )
    args = parser.parse_args(argv)
    os.environ["JOBSITE_JOB_MODULES"] = "bench.scheduler_tasks"

    def wanted(part: str) -> bool:
        return args.only in (None, part)

    parts: dict[str, list[Block]] = {}
    with servers(), tempfile.TemporaryDirectory(prefix="jobsite-bench-") as tmp:
        if wanted("overhead"):
            worker_args = [
                "--pool",
                args.pool,
                "--concurrency",
                str(args.concurrency),
                "--prefetch-multiplier",
                str(args.prefetch),
            ]
            print(
                f"-- run-path overhead: {args.rounds} rounds x {args.tasks} no-op messages per "
                f"variant, worker {' '.join(worker_args)}, acks_late, task events "
                f"{'off' if args.no_events else 'on'}; load {os.getloadavg()[0]:.1f}"
                + (f"; baseline {args.baseline.resolve()}" if args.baseline else ""),
                flush=True,
            )
            parts["overhead"] = run_path_overhead(
                args.tasks,
                args.rounds,
                worker_args,
                not args.no_events,
                Path(tmp),
                args.baseline.resolve() if args.baseline else None,
            )
            print(f"   load average after: {os.getloadavg()[0]:.1f}")
        if wanted("peak"):
            print("-- peak simultaneous starts")
            parts["peak"] = peak_per_second()
        if wanted("scale"):
            print("-- scale")
            parts["scale"] = scale()
        if wanted("precision") and not args.skip_precision:
            print("-- start precision")
            parts["precision"] = start_precision(args.minutes, Path(tmp))
    return parts
