"""Tasks and a job for the scheduler benchmark, imported by its worker via JOBSITE_JOB_MODULES."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta

import redis
from celery import shared_task

from scheduler.registry import Job, register

_redis = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
DONE = "bench:done"
FIRST = "bench:first"
LAST = "bench:last"
TARGET = int(os.environ.get("BENCH_TARGET", "0"))
# The job messages' slots are whole minutes from this long ago (~8,600 messages per bench run).
SLOTS_SINCE = timedelta(days=6)


def _mark() -> None:
    """Count a finished task; note when the first and the TARGET-th finished."""
    done = _redis.incr(DONE)
    if done == 1:
        _redis.set(FIRST, time.time())
    if done == TARGET:
        _redis.set(LAST, time.time())


@shared_task(name="bench.bare_noop", ignore_result=True)
def bare_noop() -> None:
    _mark()


# track_started=False as in Celery's defaults (and as job tasks have it): one result write per
# task, so the baseline is not handicapped by the STARTED write that jobsite's settings turn on.
@shared_task(name="bench.stored_noop", track_started=False)
def stored_noop() -> str:
    _mark()
    return "ok"


def job_noop(*, now: datetime) -> dict[str, int]:
    _mark()
    return {"noop": 1}


register(
    Job(
        name="bench-noop",
        task="bench.job_noop",
        service=job_noop,
        cron="* * * * *",
        offset=0,
        description="benchmark: a job that does nothing",
        lock_ttl=30,
        # Its messages name past minutes as beat would (bench_scheduler._Senders): a deadline
        # beyond them, so that they run instead of expiring.
        starting_deadline=int((SLOTS_SINCE + timedelta(days=1)).total_seconds()),
    )
)
