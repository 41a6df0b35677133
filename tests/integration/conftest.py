"""A real Celery worker in a thread of the test process, on the suite's Redis and database.

Use it with `@pytest.mark.django_db(transaction=True)`: the worker thread has its own database
connection and sees only committed rows, and what it writes is visible to the test at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from celery.contrib.testing.worker import TestWorkController, start_worker
from django.db import connection

from jobsite.celery import app


def close_other_connections() -> None:
    """End the worker threads' database sessions, so the test database can be flushed/dropped."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@contextmanager
def running_worker(**options: Any) -> Iterator[TestWorkController]:
    """`start_worker` with the suite's defaults: solo pool, both queues, no ping task needed.

    Pass `pool="threads", concurrency=4` for work that must run side by side.
    """
    options = {
        "pool": "solo",
        "concurrency": 1,
        "perform_ping_check": False,
        "queues": ["default", "long"],
        "shutdown_timeout": 20,
        **options,
    }
    try:
        with start_worker(app, **options) as worker:
            yield worker
    finally:
        close_other_connections()


@pytest.fixture
def celery_worker_thread() -> Iterator[TestWorkController]:
    """A started Celery worker (solo pool) consuming `default` and `long` for one test."""
    with running_worker() as worker:
        yield worker
