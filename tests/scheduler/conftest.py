from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from django.db import connection

from scheduler import registry, tasks
from scheduler.registry import Job, Service
from tests.scheduler import registered_sample_jobs, sample_jobs

tasks.register_job_tasks()  # the session-wide test jobs of registered_sample_jobs
assert registered_sample_jobs


def close_other_connections() -> None:
    """Worker threads keep their own connections; the test database cannot be dropped with them."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture
def register_job() -> Iterator[Callable[..., Job]]:
    """Register a test job (and its Celery task) for one test."""
    added: list[str] = []

    def add(name: str, service: Service = sample_jobs.noop, **overrides: object) -> Job:
        job = sample_jobs.job(name, service, **overrides)
        registry.register(job)
        tasks.register_job_tasks()
        added.append(name)
        return job

    sample_jobs.CALLS.clear()
    yield add
    for name in added:
        registry.unregister(name)
    sample_jobs.FAILURES_LEFT.clear()
    sample_jobs.FAILURES_LEFT["flaky"] = 0
