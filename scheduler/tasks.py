"""Scheduler tasks: interfaces only; the logic lives in services."""

from celery import shared_task


@shared_task(name="scheduler.ping")
def ping() -> str:
    """Round trip through broker, worker and result backend (health checks, tests)."""
    return "pong"
