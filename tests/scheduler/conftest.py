from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from scheduler import registry, tasks
from scheduler.registry import Job
from tests.scheduler import sample_jobs


@pytest.fixture
def register_job() -> Iterator[Callable[..., Job]]:
    """Register a test job (and its Celery task) for one test."""
    added: list[str] = []

    def add(name: str, service: str = "noop", **overrides: object) -> Job:
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
