"""The ops API: every endpoint, auth case and kind of bad input."""

from __future__ import annotations

import json

import pytest
from django_celery_beat.models import PeriodicTask
from rest_framework.authtoken.models import Token

from scheduler.models import JobRun, JobSchedule
from tests.conftest import audit_rows

pytestmark = pytest.mark.django_db

ENDPOINTS = [
    ("get", "/api/jobs/"),
    ("post", "/api/jobs/cleanup/trigger"),
    ("get", "/api/jobs/history"),
    ("get", "/api/schedules/"),
    ("post", "/api/schedules/"),
    ("get", "/api/schedules/cleanup/"),
    ("patch", "/api/schedules/cleanup/"),
    ("put", "/api/schedules/cleanup/"),
    ("delete", "/api/schedules/cleanup/"),
    ("post", "/api/schedules/cleanup/toggle"),
    ("post", "/api/executions/retry"),
    ("get", "/api/schema/"),
]


def send(client, method, url, body=None, **extra):
    if body is None and method == "get":
        return getattr(client, method)(url, **extra)
    payload = body if isinstance(body, str | bytes) else json.dumps(body or {})
    return getattr(client, method)(url, payload, content_type="application/json", **extra)


def state():
    """Everything a refused request must leave as it was."""
    return (
        list(PeriodicTask.objects.order_by("pk").values()),
        list(JobSchedule.objects.order_by("pk").values()),
        JobRun.objects.count(),
        audit_rows().count(),
    )


@pytest.mark.parametrize(("method", "url"), ENDPOINTS)
def test_anonymous_callers_get_401(client, schedules, method, url):
    before = state()
    response = send(client, method, url)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Token")
    assert state() == before


@pytest.mark.parametrize(("method", "url"), ENDPOINTS)
def test_authenticated_non_staff_get_403(client, schedules, django_user_model, method, url):
    user = django_user_model.objects.create_user("player", password="pw")
    token = Token.objects.create(user=user)
    before = state()
    response = send(client, method, url, HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 403
    assert state() == before


def test_a_wrong_token_gets_401(client, schedules):
    response = client.get("/api/jobs/", HTTP_AUTHORIZATION="Token not-a-token")
    assert response.status_code == 401


def test_jobs_lists_every_job_with_schedule_last_run_and_stats(api, runs):
    response = api.get("/api/jobs/")
    assert response.status_code == 200
    jobs = {job["name"]: job for job in response.json()["results"]}
    tier3 = jobs["referral-tier3"]
    assert tier3["enabled"] is True
    assert tier3["six_field"] == "15 * * * * *"
    assert tier3["next_run"].endswith(":15Z")
    assert len(tier3["next_runs"]) == 5
    assert tier3["last_run"]["status"] == "succeeded"
    assert tier3["stats"]["runs"] == 60
    assert tier3["stats"]["success_rate"] == 1.0
    assert jobs["live-stats-sync"]["stats"]["success_rate"] == 0.0


def test_trigger_queues_a_run_through_the_run_path(api, schedules):
    response = send(
        api,
        "post",
        "/api/jobs/cleanup/trigger",
        {"reason": "re-run after fix"},
        REMOTE_ADDR="192.0.2.7",
    )
    assert response.status_code == 202
    run = JobRun.objects.get(pk=response.json()["run_id"])
    assert (run.job, run.trigger, run.status) == ("cleanup", "api", "queued")
    assert run.user.username == "operator"
    event = audit_rows().get()
    assert (event.action, event.ip, event.via, event.reason) == (
        "job.run",
        "192.0.2.7",
        "api",
        "re-run after fix",
    )


def test_trigger_of_an_unknown_job_is_404_naming_it(api, schedules):
    before = state()
    response = send(api, "post", "/api/jobs/no-such-job/trigger", {})
    assert response.status_code == 404
    assert response.json() == {"detail": "unknown job 'no-such-job'"}
    assert state() == before


def test_a_trigger_body_that_is_not_an_object_is_400(api, schedules):
    before = state()
    response = send(api, "post", "/api/jobs/cleanup/trigger", "[]")
    assert response.status_code == 400
    assert "non_field_errors" in response.json()
    assert state() == before


def test_history_is_newest_first_filtered_and_paginated(api, runs):
    response = api.get("/api/jobs/history", {"job": "referral-tier3", "limit": 5})
    body = response.json()
    assert response.status_code == 200
    assert body["count"] == 60
    slots = [row["slot"] for row in body["results"]]
    assert len(slots) == 5
    assert slots == sorted(slots, reverse=True)
    second = api.get("/api/jobs/history", {"job": "referral-tier3", "limit": 5, "offset": 5})
    assert second.json()["results"][0]["slot"] < slots[-1]
    failed = api.get("/api/jobs/history", {"status": "failed"}).json()
    assert [row["job"] for row in failed["results"]] == ["live-stats-sync"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"job": "no-such-job"}, "job"),
        ({"status": "exploded"}, "status"),
        ({"limit": "abc"}, "limit"),
        ({"limit": 0}, "limit"),
        ({"limit": 10**9}, "limit"),
        ({"offset": -1}, "offset"),
    ],
)
def test_history_refuses_bad_queries_naming_the_field(api, runs, query, field):
    response = api.get("/api/jobs/history", query)
    assert response.status_code == 400
    assert field in response.json()


def test_schedules_list_and_read(api, schedules):
    listed = api.get("/api/schedules/").json()["results"]
    assert {s["name"] for s in listed} >= {"cleanup", "settlement"}
    one = api.get("/api/schedules/cleanup/").json()
    assert (one["cron"], one["offset"], one["six_field"]) == ("0 3 * * *", 35, "35 0 3 * * *")
    assert api.get("/api/schedules/nope/").status_code == 404


def test_update_answers_next_runs_and_is_audited(api, schedules):
    response = send(
        api,
        "patch",
        "/api/schedules/cleanup/",
        {"cron": "@hourly", "offset": 36},
        REMOTE_ADDR="198.51.100.4",
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["dry_run"] is False
    assert body["schedule"]["six_field"] == "36 0 * * * *"
    assert all(run.endswith(":00:36Z") for run in body["next_runs"])
    assert body["collisions"] == []
    event = audit_rows().get()
    assert (event.action, event.ip) == ("schedule.update", "198.51.100.4")
    assert (event.before["cron"], event.after["cron"]) == ("0 3 * * *", "0 * * * *")
    assert (event.before["offset"], event.after["offset"]) == (35, 36)


def test_a_dry_run_previews_a_collision_and_writes_nothing(api, schedules):
    before = state()
    response = send(api, "patch", "/api/schedules/referral-tier3/?dry_run=1", {"offset": 0})
    assert response.status_code == 200
    body = response.json()
    assert body["dry_run"] is True
    assert body["collisions"][0]["jobs"] == ["referral-tier2", "referral-tier3"]
    assert "referral-tier2" in body["warning"]
    assert state() == before


def test_put_takes_enabled_queue_and_priority(api, schedules):
    response = send(
        api, "put", "/api/schedules/cleanup/", {"enabled": False, "queue": "default", "priority": 3}
    )
    assert response.status_code == 200
    task = PeriodicTask.objects.get(name="cleanup")
    assert (task.enabled, task.queue, task.priority) == (False, "default", 3)


def test_toggle_flips_enabled_and_tells_beat(api, schedules):
    assert send(api, "post", "/api/schedules/cleanup/toggle").json()["schedule"]["enabled"] is False
    assert send(api, "post", "/api/schedules/cleanup/toggle").json()["schedule"]["enabled"] is True
    assert [e.action for e in audit_rows().order_by("id")] == [
        "schedule.update",
        "schedule.update",
    ]


def test_toggle_dry_run_writes_nothing(api, schedules):
    before = state()
    response = send(api, "post", "/api/schedules/cleanup/toggle?dry_run=1")
    assert response.status_code == 200
    assert state() == before


def test_delete_then_create_a_schedule(api, schedules):
    assert send(api, "delete", "/api/schedules/cleanup/").status_code == 204
    assert not PeriodicTask.objects.filter(name="cleanup").exists()
    created = send(
        api, "post", "/api/schedules/", {"job": "cleanup", "cron": "@daily", "offset": 35}
    )
    assert created.status_code == 201, created.json()
    assert created.json()["schedule"]["six_field"] == "35 0 0 * * *"
    assert JobSchedule.objects.get(periodic_task__name="cleanup").offset_seconds == 35
    assert [e.action for e in audit_rows().order_by("id")] == [
        "schedule.delete",
        "schedule.create",
    ]


def test_creating_a_schedule_that_exists_is_409_naming_job(api, schedules):
    before = state()
    response = send(
        api, "post", "/api/schedules/", {"job": "cleanup", "cron": "@daily", "offset": 1}
    )
    assert response.status_code == 409
    assert "already has a schedule" in response.json()["job"][0]
    assert state() == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"offset": -1}, "offset"),
        ({"offset": 60}, "offset"),
        ({"offset": 10**9}, "offset"),
        ({"offset": "abc"}, "offset"),
        ({"offset": "12"}, "offset"),
        ({"offset": 12.5}, "offset"),
        ({"offset": True}, "offset"),
        ({"offset": None}, "offset"),
        ({"cron": "* * *"}, "cron"),
        ({"cron": "99 * * * *"}, "cron"),
        ({"cron": "0 0 31 2 *"}, "cron"),
        ({"cron": "@fortnightly"}, "cron"),
        ({"cron": 5}, "cron"),
        ({"enabled": "yes"}, "enabled"),
        ({"enabled": 1}, "enabled"),
        ({"queue": "fast"}, "queue"),
        ({"priority": 10}, "priority"),
        ({"priority": "1"}, "priority"),
    ],
)
def test_bad_schedule_input_is_400_naming_the_field_and_writes_nothing(api, schedules, body, field):
    before = state()
    response = send(api, "patch", "/api/schedules/cleanup/", body)
    assert response.status_code == 400
    assert field in response.json()
    assert state() == before


@pytest.mark.parametrize(
    "body", ['{"offset": 5', "not json", '{"offset": NaN}', b"\xff\xfe", "[1, 2]", '"text"']
)
def test_malformed_json_is_400_and_writes_nothing(api, schedules, body):
    before = state()
    response = send(api, "patch", "/api/schedules/cleanup/", body)
    assert response.status_code == 400
    assert state() == before


def test_a_body_over_the_upload_limit_is_413_naming_body(api, schedules, settings):
    before = state()
    huge = json.dumps({"offset": 5, "padding": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10)})
    response = send(api, "patch", "/api/schedules/cleanup/", huge)
    assert response.status_code == 413
    assert "body" in response.json()
    assert state() == before


def test_a_body_that_is_not_json_is_415(api, schedules):
    before = state()
    response = api.patch("/api/schedules/cleanup/", "offset=5", content_type="text/plain")
    assert response.status_code == 415
    assert "detail" in response.json()
    assert state() == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"job": "no-such-job", "cron": "@daily", "offset": 1}, "job"),
        ({"cron": "@daily", "offset": 1}, "job"),
        ({"job": "cleanup", "offset": 1}, "cron"),
        ({"job": "cleanup", "cron": "@daily"}, "offset"),
    ],
)
def test_bad_create_input_is_400_naming_the_field(api, body, field):
    before = state()
    response = send(api, "post", "/api/schedules/", body)
    assert response.status_code == 400
    assert field in response.json()
    assert state() == before


def test_retry_queues_the_next_attempt_of_failed_runs(api, runs):
    failed = JobRun.objects.get(status="failed")
    response = send(api, "post", "/api/executions/retry", {"ids": [failed.pk]})
    assert response.status_code == 200
    result = response.json()["results"][0]
    assert (result["run_id"], result["attempt"], result["status"]) == (failed.pk, 2, "queued")
    retry = JobRun.objects.get(pk=result["retried_run_id"])
    assert (retry.trigger, retry.slot) == ("retry", failed.slot)
    assert audit_rows().get().action == "run.retry"


@pytest.mark.parametrize(
    "body",
    [{"ids": []}, {"ids": "1"}, {"ids": ["a"]}, {"ids": [10**12]}, {}, {"ids": [True]}],
)
def test_bad_retry_input_is_400_naming_ids_and_writes_nothing(api, runs, body):
    before = state()
    response = send(api, "post", "/api/executions/retry", body)
    assert response.status_code == 400
    assert "ids" in response.json()
    assert state() == before


def test_retrying_a_succeeded_run_is_refused_with_nothing_queued(api, runs):
    failed = JobRun.objects.get(status="failed")
    ok = JobRun.objects.filter(status="succeeded").first()
    before = state()
    response = send(api, "post", "/api/executions/retry", {"ids": [failed.pk, ok.pk]})
    assert response.status_code == 400
    assert "only failed" in response.json()["ids"][0]
    assert state() == before


def test_the_openapi_schema_lists_every_endpoint(api):
    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    paths = json.loads(response.content)["paths"]
    assert set(paths) >= {
        "/api/jobs/",
        "/api/jobs/{name}/trigger",
        "/api/jobs/history",
        "/api/schedules/",
        "/api/schedules/{name}/",
        "/api/schedules/{name}/toggle",
        "/api/executions/retry",
    }
