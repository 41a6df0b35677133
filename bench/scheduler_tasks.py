"""Tasks and a job for the scheduler benchmark, imported by its worker via JOBSITE_JOB_MODULES."""

from __future__ import annotations

import os
from datetime import datetime

import redis
from celery import shared_task

from scheduler.registry import Job, register

_redis = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
DONE = "bench:done"


@shared_task(name="bench.bare_noop", ignore_result=True)
def bare_noop() -> None:
    _redis.incr(DONE)


@shared_task(name="bench.stored_noop")
def stored_noop() -> str:
    _redis.incr(DONE)
    return "ok"


def job_noop(*, now: datetime) -> dict[str, int]:
    _redis.incr(DONE)
    return {"noop": 1}


register(
    Job(
        name="bench-noop",
        task="bench.job_noop",
        service="bench.scheduler_tasks.job_noop",
        cron="* * * * *",
        offset=0,
        description="benchmark: a job that does nothing",
        lock_ttl=30,
    )
)
