"""A real Celery worker, the real Redis broker and django-celery-results, end to end."""

from __future__ import annotations

import json
import logging

import pytest
import redis
from celery import shared_task
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


@shared_task(name="tests.integration.echo_keys")
def echo_keys(*args: object, **kwargs: object) -> list[str]:
    return sorted(kwargs)


def test_secret_looking_arguments_are_not_stored_in_clear_in_results(celery_worker_thread):
    result = echo_keys.apply_async(
        args=[{"password": "hunter2-in-args"}],
        kwargs={"job": "settlement", "api_token": "tok-4242", "nested": {"Secret": "s-7"}},
    )

    # The task got the real values; the stored result and the event headers did not.
    assert result.get(timeout=30) == ["api_token", "job", "nested"]
    stored = TaskResult.objects.get(task_id=result.id)
    stored_text = f"{stored.task_args} {stored.task_kwargs}"
    for secret in ("hunter2-in-args", "tok-4242", "s-7"):
        assert secret not in stored_text
    assert "settlement" in stored.task_kwargs  # what is not secret stays readable
    assert "api_token" in stored.task_kwargs
