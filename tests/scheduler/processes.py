"""Real `celery worker` and `celery beat` subprocesses against the test database and Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.db import connection


def test_environment(**extra: str) -> dict[str, str]:
    db = connection.settings_dict
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "JOBSITE_JOB_MODULES": "tests.scheduler.registered_sample_jobs",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
    )
    return env


@contextmanager
def celery_process(args: list[str], log: Path, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    with _process([sys.executable, "-m", "celery", "-A", "jobsite", *args], log, env) as process:
        yield process


@contextmanager
def manage_process(args: list[str], log: Path, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """`manage.py <args>` (e.g. the watchdog), stopped with SIGTERM at the end like the others."""
    root = Path(__file__).resolve().parents[2]
    with _process([sys.executable, str(root / "manage.py"), *args], log, env) as process:
        yield process


@contextmanager
def _process(argv: list[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=test_environment(**env),
            cwd=Path(__file__).resolve().parents[2],
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)


def worker_args(tmp: Path, name: str = "w1") -> list[str]:
    return [
        "worker",
        "--queues",
        "default,long",
        "--pool",
        "threads",
        "--concurrency",
        "4",
        "--hostname",
        f"{name}@%h",
        "--loglevel",
        "INFO",
        "--without-mingle",
        "--without-gossip",
    ]


def beat_args(tmp: Path) -> list[str]:
    return [
        "beat",
        "--loglevel",
        "INFO",
        "--pidfile",
        str(tmp / "beat.pid"),
        "--schedule",
        str(tmp / "beat-schedule"),
    ]
