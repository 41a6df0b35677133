"""A real Celery worker, the real Redis broker and django-celery-results, end to end."""

from __future__ import annotations

import json
import logging

import pytest
import redis
from django.conf import settings
from django_celery_results.models import TaskResult

from scheduler.tasks import ping

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_ping_runs_on_the_worker_and_its_result_is_stored(celery_worker_thread):
    result = ping.delay()

    assert result.get(timeout=30) == "pong"
    stored = TaskResult.objects.get(task_id=result.id)
    assert stored.status == "SUCCESS"
    assert json.loads(stored.result) == "pong"
    assert stored.task_name == "scheduler.ping"  # extended results
    assert stored.worker  # the host that ran it
    assert stored.date_done is not None


def test_the_worker_refuses_a_pickle_message(celery_worker_thread, caplog):
    caplog.set_level(logging.ERROR, logger="celery.worker.consumer.consumer")
    # The client may encode pickle (accept_content limits decoding only): an attacker's message.
    refused = ping.apply_async(serializer="pickle")
    accepted = ping.apply_async()  # queued behind it: once it has run, the first was consumed

    assert accepted.get(timeout=30) == "pong"
    assert not TaskResult.objects.filter(task_id=refused.id).exists()
    assert TaskResult.objects.get(task_id=accepted.id).status == "SUCCESS"
    refusals = [
        r.getMessage() for r in caplog.records if "Refusing to deserialize" in r.getMessage()
    ]
    assert len(refusals) == 1
    assert "application/x-python-serialize" in refusals[0]
    # Rejected and dropped, not left to be delivered again.
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        waiting = client.lrange("default", 0, -1) + client.hvals("unacked")
        assert [m for m in waiting if refused.id.encode() in m] == []
    finally:
        client.close()
