"""Services of the jobs the scheduler's tests register (the scheduler knows no real domain)."""

from __future__ import annotations

import time
from datetime import datetime

from django.db import OperationalError, connection

from scheduler.locks import fence_check
from scheduler.registry import Job, RetryPolicy, Service

CALLS: list[datetime] = []
FAILURES_LEFT = {"flaky": 0}


def noop(*, now: datetime) -> dict[str, int]:
    CALLS.append(now)
    return {"calls": len(CALLS)}


def slow(*, now: datetime) -> dict[str, int]:
    """Holds the lease for a while; records its interval in a table of its own via SQL."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        started = cursor.fetchone()[0]
        time.sleep(0.4)
        cursor.execute("SELECT clock_timestamp()")
        ended = cursor.fetchone()[0]
    return {"started": started.isoformat(), "ended": ended.isoformat()}


def flaky(*, now: datetime) -> dict[str, int]:
    if FAILURES_LEFT["flaky"] > 0:
        FAILURES_LEFT["flaky"] -= 1
        raise OperationalError("server closed the connection unexpectedly")
    return {"ok": 1}


def broken(*, now: datetime) -> dict[str, int]:
    raise ValueError("the service has a bug")


def fenced_write(*, now: datetime) -> dict[str, int]:
    """Stands for a money write: the fence is checked in the writing transaction."""
    from django.db import transaction

    time.sleep(float(FAILURES_LEFT.get("sleep", 0)))
    with transaction.atomic():
        fence_check()
    return {"written": 1}


def job(name: str, service: Service, **overrides: object) -> Job:
    fields: dict[str, object] = {
        "name": name,
        "task": f"tests.{name.replace('-', '_')}",
        "service": service,
        "cron": "* * * * *",
        "offset": 0,
        "description": f"test job {name}",
        "lock_ttl": 30,
        "retry": RetryPolicy(
            retry_on=(OperationalError,), max_retries=2, backoff_base=1, backoff_cap=2
        ),
    }
    fields.update(overrides)
    return Job(**fields)  # type: ignore[arg-type]


def steal_lease(*, now: datetime) -> dict[str, int]:
    """Another holder takes the lease while this run works (as after a long pause)."""
    with connection.cursor() as cursor:
        cursor.execute("UPDATE scheduler_joblease SET token = token + 1")
    return {"written": 1}


def sleeper(*, now: datetime) -> dict[str, int]:
    """Long enough to be killed in the middle (tests SIGKILL the worker running it)."""
    seconds = float(__import__("os").environ.get("SAMPLE_SLEEP", "0.2"))
    time.sleep(seconds)
    return {"slept": int(seconds)}
