"""A job's message is named after the job in Flower and the worker's logs (Celery's `shadow`)."""

from __future__ import annotations

import json

import pytest
import redis
from django.conf import settings

from jobsite.celery import app
from scheduler.models import JobRun
from scheduler.registry import get_job
from scheduler.services.dispatch import job_trigger

pytestmark = pytest.mark.django_db(transaction=True)


def queued_headers(queue: str) -> list[dict]:
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    keys = [k for k in client.keys(f"{queue}*") if not k.startswith(b"_kombu")]
    return [json.loads(raw)["headers"] for key in keys for raw in client.lrange(key, 0, -1)]


def test_a_dispatched_job_message_carries_the_job_name_as_its_shadow():
    app.control.purge()
    job = get_job("live-stats-sync")

    run = job_trigger(job=job, trigger=JobRun.Trigger.MANUAL, reason="shadow test")

    headers = [h for h in queued_headers(job.queue) if h["id"] == run.task_id]
    assert [(h["task"], h["shadow"]) for h in headers] == [(job.task, "live-stats-sync")]
    app.control.purge()


def test_a_task_that_is_no_job_keeps_its_own_name():
    app.control.purge()
    sent = app.send_task("scheduler.ping", queue="default")

    headers = [h for h in queued_headers("default") if h["id"] == sent.id]
    assert [h.get("shadow") for h in headers] == [None]
    app.control.purge()
