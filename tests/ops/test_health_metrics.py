"""/healthz beat liveness and /metrics."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django_celery_beat.models import PeriodicTask

from ops.health import beat_liveness
from tests.ops.conftest import make_run

pytestmark = pytest.mark.django_db

NOON = datetime(2026, 3, 4, 12, 0, 30, tzinfo=UTC)


def test_beat_is_idle_without_enabled_schedules():
    assert beat_liveness(now=NOON).state == "idle"


def test_beat_is_stale_when_a_due_boundary_left_no_trace(schedules):
    liveness = beat_liveness(now=NOON)
    assert liveness.state == "stale"
    assert liveness.expected == datetime(2026, 3, 4, 11, 56, tzinfo=UTC)  # grace 240 s
    assert "stale" in liveness.describe()


def test_beat_is_alive_when_it_stamped_last_run_at(schedules):
    PeriodicTask.objects.filter(name="referral-tier2").update(
        last_run_at=datetime(2026, 3, 4, 11, 58, tzinfo=UTC)
    )
    assert beat_liveness(now=NOON).state == "ok"


def test_beat_is_alive_when_a_beat_run_was_recorded_though_last_run_at_lags(schedules):
    run = make_run("referral-tier2", datetime(2026, 3, 4, 11, 59, tzinfo=UTC))
    type(run).objects.filter(pk=run.pk).update(created_at=datetime(2026, 3, 4, 11, 59, tzinfo=UTC))
    assert beat_liveness(now=NOON).state == "ok"


def test_healthz_is_503_with_beat_stale_and_200_when_not_required(client, schedules, settings):
    PeriodicTask.objects.update(last_run_at=datetime.now(UTC) - timedelta(hours=2))
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["beat"].startswith("stale")
    assert response.json()["checks"]["database"] == "ok"

    settings.HEALTH_BEAT_REQUIRED = False
    assert client.get("/healthz").status_code == 200


def test_healthz_is_200_when_beat_sent_recently(client, schedules):
    PeriodicTask.objects.update(last_run_at=datetime.now(UTC))
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "broker": "ok", "beat": "ok"}


def test_metrics_need_a_staff_token(client, schedules):
    assert client.get("/metrics").status_code == 401


def test_metrics_report_runs_durations_lateness_success_and_queues(api, runs):
    response = api.get("/metrics", HTTP_ACCEPT="text/plain")
    assert response.status_code == 200
    text = response.content.decode()
    # The fixture's oldest minute may fall just outside the hour.
    assert re.search(
        r'jobsite_job_runs_last_hour\{job="referral-tier3",status="succeeded"\} (59|60)\.0', text
    )
    assert 'jobsite_job_runs_last_hour{job="settlement",status="skipped_lock"} 1.0' in text
    assert 'jobsite_job_duration_seconds{job="referral-tier3",quantile="0.95"} 0.15' in text
    assert 'jobsite_job_lateness_seconds{job="referral-tier3",quantile="0.99"} 0.02' in text
    assert 'jobsite_job_last_success_timestamp_seconds{job="referral-tier2"}' in text
    assert 'jobsite_celery_queue_length{queue="default"}' in text
    assert 'jobsite_celery_queue_length{queue="long"}' in text
    assert "jobsite_broker_up 1.0" in text
    assert 'jobsite_job_enabled{job="cleanup"} 1.0' in text


def test_beat_is_not_stale_right_after_the_schedules_were_applied():
    from django.utils import timezone

    from scheduler.services.schedules import schedules_apply

    schedules_apply(profile="test")  # every minute; the last boundary past the grace predates it
    liveness = beat_liveness(now=timezone.now())
    assert liveness.healthy, liveness.describe()
