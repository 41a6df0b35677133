"""Hostile input through every door: a clear error that names what was wrong, and nothing written.

The issue's list (cron `61 * * * *` and `0 0 31 2 *`, timezone `Mars/Base`, offsets -1, 60, 10^9
and "abc", an unknown task, `{bad json`, args that are not a list, a 1 MB body, an unknown job)
is tried here through the doors not already covered next to their feature:
tests/ops/test_api.py (API bodies, malformed JSON, the upload limit, unknown jobs),
tests/ops/test_admin.py (bad offsets, `0 0 31 2 *`), tests/scheduler/test_schedulers.py (the ORM
for minute 61, `0 0 31 2 *`, bad kwargs/args/task, offset 60), tests/scheduler/test_schedules.py
and tests/test_foundation.py (environment variables), tests/referrals (cycles, held payouts).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import DatabaseError, transaction
from django.urls import reverse
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from games.models import GameSession, Player
from scheduler.audit import Actor
from scheduler.models import JobRun, JobSchedule
from scheduler.services.writes import schedules_apply
from tests.conftest import audit_rows
from tests.ops.test_admin import _form_data
from tests.scheduler.processes import test_environment as subprocess_environment

pytestmark = pytest.mark.django_db


def schedule_state() -> list[tuple]:
    """Everything a bad schedule edit could touch."""
    return [
        *PeriodicTask.objects.order_by("pk").values_list(
            "pk", "task", "args", "kwargs", "enabled", "crontab_id"
        ),
        *CrontabSchedule.objects.order_by("pk").values_list(
            "pk", "minute", "hour", "day_of_month", "month_of_year", "timezone"
        ),
        *JobSchedule.objects.order_by("pk").values_list("pk", "offset_seconds"),
        ("runs", JobRun.objects.count(), "audit", audit_rows().count()),
    ]


@pytest.fixture
def applied(_applied: dict[str, PeriodicTask]) -> dict[str, PeriodicTask]:
    return copy.deepcopy(_applied)


@pytest.fixture(scope="module")
def _applied(module_db: bool) -> dict[str, PeriodicTask]:
    """Made once per module and worker; each test rolls back to it (the concurrent writes,
    which commit, are in tests/test_hostile_parallel.py)."""
    assert module_db, "a transaction=True test here would make the schedules per test"
    schedules_apply(actor=Actor.system("tests"), profile="production")
    return {t.name: t for t in PeriodicTask.objects.select_related("crontab", "job_schedule")}


# --- the admin ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cron_expression": "61 * * * *"}, "minute"),
        ({"kwargs": "{bad json"}, "kwargs"),
        ({"args": '{"a": 1}'}, "args"),
        ({"regtask": "", "task": "no.such.task"}, "no.such.task"),
    ],
)
def test_the_periodic_task_form_refuses_it_by_name(admin_client, applied, overrides, message):
    task = applied["cleanup"]
    before = schedule_state()
    url = reverse("admin:django_celery_beat_periodictask_change", args=[task.pk])

    response = admin_client.post(url, _form_data(task) | overrides)

    assert response.status_code == 200  # the form again, not a redirect
    errors = response.context["adminform"].form.errors.as_text()
    errors += str(response.context["inline_admin_formsets"][0].formset.errors)
    assert message in errors
    assert schedule_state() == before


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"minute": "61"}, "minute"),
        ({"timezone": "Mars/Base"}, "timezone"),
        ({"day_of_month": "31", "month_of_year": "2", "minute": "0", "hour": "0"}, "never fires"),
    ],
)
def test_the_crontab_form_refuses_it_by_name(admin_client, applied, fields, field):
    before = schedule_state()
    data = {
        "minute": "0",
        "hour": "*",
        "day_of_week": "*",
        "day_of_month": "*",
        "month_of_year": "*",
        "timezone": "UTC",
        "periodictask_set-TOTAL_FORMS": "0",
        "periodictask_set-INITIAL_FORMS": "0",
        **fields,
    }

    response = admin_client.post(reverse("admin:django_celery_beat_crontabschedule_add"), data)

    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors.as_text()
    assert schedule_state() == before


# --- the ORM and the database -------------------------------------------------------------------


def test_the_orm_refuses_an_unknown_timezone():
    before = CrontabSchedule.objects.count()  # the module's shared schedules' crontabs
    with pytest.raises(ValidationError, match="Mars/Base"):
        CrontabSchedule.objects.create(minute="0", timezone="Mars/Base")
    assert CrontabSchedule.objects.count() == before


@pytest.mark.parametrize(
    ("offset", "message"),
    [(-1, "jobschedule_offset_0_59"), (60, "jobschedule_offset_0_59"), (10**9, "out of range")],
)
def test_the_database_refuses_an_offset_outside_0_59(applied, offset, message):
    before = schedule_state()
    with pytest.raises(DatabaseError, match=message), transaction.atomic():
        JobSchedule.objects.filter(periodic_task__name="cleanup").update(offset_seconds=offset)
    assert schedule_state() == before


def test_the_orm_refuses_a_non_numeric_offset(applied):
    before = schedule_state()
    with pytest.raises(ValueError, match="abc"), transaction.atomic():
        JobSchedule.objects.filter(periodic_task__name="cleanup").update(offset_seconds="abc")
    assert schedule_state() == before


# --- the API --------------------------------------------------------------------------------------


def test_the_api_refuses_minute_61_naming_cron(applied, admin_user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(admin_user)
    before = schedule_state()

    response = client.patch(
        "/api/schedules/cleanup/",
        json.dumps({"cron": "61 * * * *"}),
        content_type="application/json",
    )

    assert response.status_code == 400
    assert "cron" in response.json()
    assert schedule_state() == before


# --- the command line -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["runjob", "no-such-job"], "no-such-job"),
        (["runjob", "cleanup", "--user", "ghost"], "--user 'ghost'"),
        (["schedules", "apply", "--profile", "mars"], "--profile"),
        (["schedules", "list", "--next", "abc"], "--next"),
        (["schedules", "remove", "no-such-job"], "no-such-job"),
        (["schedules", "remove"], "name"),
        (["schedules", "frobnicate"], "frobnicate"),
    ],
)
def test_a_bad_command_line_is_refused_by_name(applied, argv, message):
    before = schedule_state()
    with pytest.raises(CommandError, match=message):
        call_command(*argv)
    assert schedule_state() == before


@pytest.mark.process
@pytest.mark.parametrize("value", ["60", "-1", "1000000000", "abc"])
def test_a_bad_stagger_variable_stops_apply_before_anything_is_written(value):
    # Settings read it at start: manage.py prints one line naming the variable (ConfigError).
    result = subprocess.run(
        [sys.executable, "manage.py", "schedules", "apply"],
        cwd=Path(__file__).resolve().parents[1],
        env=subprocess_environment(JOB_STAGGER_CLEANUP=value),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("configuration error: JOB_STAGGER_CLEANUP="), result.stderr
    assert not PeriodicTask.objects.exists()
    assert not JobSchedule.objects.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["seed_demo", "--players", "0"], "--players"),
        (["seed_demo", "--sessions", "-5"], "--sessions"),
        (["seed_demo", "--until", "yesterday"], "--until"),
        (["seed_demo", "--players", "abc"], "--players"),
        (["simulate", "--rate", "0"], "--rate"),
        (["simulate", "--rate", "abc"], "--rate"),
    ],
)
def test_the_demo_commands_refuse_bad_sizes_by_name(argv, message):
    with pytest.raises(CommandError, match=message):
        call_command(*argv)
    assert not Player.objects.exists()
    assert not GameSession.objects.exists()


# --- flags and query parameters fail closed -------------------------------------------------------


@pytest.fixture
def api(admin_user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(admin_user)
    return client


@pytest.mark.parametrize(
    "query",
    [
        "dry_run=null",
        "dry_run=maybe",
        "dry_run=on",
        "dry_run=yes",
        "dry_run=",
        "dryrun=1",
        "dry_run=1&dry_run=0",
    ],
)
def test_a_flag_the_api_does_not_understand_is_refused_and_nothing_toggles(api, applied, query):
    before = schedule_state()

    response = api.post(f"/api/schedules/cleanup/toggle?{query}")

    assert response.status_code == 400
    assert query.split("=")[0] in response.json()
    assert schedule_state() == before


@pytest.mark.parametrize("flag", ["1", "true"])
def test_dry_run_1_or_true_previews_and_writes_nothing(api, applied, flag):
    before = schedule_state()

    response = api.post(f"/api/schedules/cleanup/toggle?dry_run={flag}")

    assert response.status_code == 200
    assert response.json()["dry_run"] is True
    assert schedule_state() == before


@pytest.mark.parametrize("flag", ["0", "false"])
def test_dry_run_0_or_false_writes(api, applied, flag):
    response = api.post(f"/api/schedules/cleanup/toggle?dry_run={flag}")

    assert response.status_code == 200
    assert PeriodicTask.objects.get(name="cleanup").enabled is False


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("delete", "/api/schedules/cleanup/"),
        ("post", "/api/jobs/cleanup/trigger"),
        ("post", "/api/executions/retry"),
    ],
)
def test_a_write_without_dry_run_refuses_one_instead_of_writing(api, applied, method, url):
    before = schedule_state()

    response = getattr(api, method)(f"{url}?dry_run=1", {}, format="json")

    assert response.status_code == 400
    assert "dry_run" in response.json()
    assert schedule_state() == before


# --- inputs that were 500s ------------------------------------------------------------------------


def test_json_nested_100k_deep_is_a_400_naming_the_body(api, applied):
    before = schedule_state()
    body = "[" * 100_000 + "]" * 100_000

    response = api.patch("/api/schedules/cleanup/", body, content_type="application/json")

    assert response.status_code == 400
    assert "body" in response.json()
    assert schedule_state() == before


def test_a_trigger_reason_too_long_for_the_ledger_is_refused_naming_reason(
    applied, django_user_model
):
    from rest_framework.test import APIClient

    operator = django_user_model.objects.create_superuser("o" * 150, password="pw")
    client = APIClient()
    client.force_authenticate(operator)
    before = schedule_state()

    response = client.post("/api/jobs/cleanup/trigger", {"reason": "r" * 200}, format="json")

    assert response.status_code == 400
    assert "characters" in response.json()["reason"][0]
    assert schedule_state() == before  # no run, no audit row


@pytest.mark.parametrize(
    ("forwarded", "recorded"),
    [
        ("1.2.3.4:5678", "1.2.3.4"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:db8::2", "2001:db8::2"),
        ("fe80::1%eth0", "fe80::1"),
        ("[fe80::1%eth0]:80", "fe80::1"),
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("not-an-ip", "127.0.0.1"),  # not an address: the proxy's own (REMOTE_ADDR) instead
        ("", "127.0.0.1"),
    ],
)
def test_a_forwarded_address_is_parsed_strictly(api, applied, settings, forwarded, recorded):
    settings.OPS_TRUSTED_PROXIES = 1

    response = api.patch(
        "/api/schedules/cleanup/",
        {"offset": 36},
        format="json",
        HTTP_X_FORWARDED_FOR=f"9.9.9.9, {forwarded}",
        REMOTE_ADDR="127.0.0.1",
    )

    assert response.status_code == 200
    assert audit_rows().get(object_repr="cleanup").ip == recorded


def _admins_with_a_date_hierarchy() -> list[tuple[str, str]]:
    from django.contrib import admin

    return [
        (
            f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist",
            model_admin.date_hierarchy,
        )
        for model, model_admin in admin.site._registry.items()
        if model_admin.date_hierarchy
    ]


@pytest.mark.parametrize("year", ["99999999999", "9999", "abc"])
@pytest.mark.parametrize(("url_name", "field"), _admins_with_a_date_hierarchy())
def test_an_impossible_date_filter_in_the_admin_is_a_400(admin_client, url_name, field, year):
    response = admin_client.get(reverse(url_name), {f"{field}__year": year})

    assert response.status_code == 400
    assert "Invalid filter" in response.content.decode()


@pytest.mark.parametrize(
    "url",
    [
        "/api/schedules/%00/",
        "/admin/scheduler/jobrun/?job=%00",
        "/admin/scheduler/jobrun/?q=a%00b",
        "/api/jobs/history?job=%00",
    ],
)
def test_a_nul_byte_in_the_address_is_a_400(admin_client, applied, url):
    # PostgreSQL text cannot hold NUL: it used to reach the database and fail there (500).
    response = admin_client.get(url)

    assert response.status_code == 400
    assert "NUL" in response.content.decode()


def _client(user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user)
    return client


# --- hardening ------------------------------------------------------------------------------------


def test_thirty_wrong_passwords_then_the_right_one_is_refused_for_a_cool_off(client, admin_user):
    from datetime import timedelta

    from axes.models import AccessAttempt
    from django.db.models import F

    login = reverse("admin:login")
    for _ in range(30):
        client.post(login, {"username": admin_user.username, "password": "guess"})

    refused = client.post(login, {"username": admin_user.username, "password": "password"})

    assert refused.status_code == 429
    assert "_auth_user_id" not in client.session
    # once the cool-off (AXES_COOLOFF_MINUTES, 15 by default) has passed the right one works
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(minutes=16))
    accepted = client.post(login, {"username": admin_user.username, "password": "password"})
    assert accepted.status_code == 302
    assert client.session["_auth_user_id"] == str(admin_user.pk)


def _a_failing_page(request: object, settings: object) -> str:
    import sys

    from django.views.debug import technical_500_response

    broker_url = settings.CELERY_BROKER_URL  # a local variable of the failing frame
    try:
        raise RuntimeError(f"cannot reach {broker_url}")
    except RuntimeError:
        return technical_500_response(request, *sys.exc_info()).content.decode()


def test_the_debug_error_page_hides_passwords_in_urls(rf, settings):
    import uuid

    # Made at run time: the page quotes the source lines around the failure.
    db, redis, header = (uuid.uuid4().hex for _ in range(3))
    settings.DEBUG = True
    settings.DATABASE_URL = f"postgres://jobsite:{db}@postgres:5432/jobsite"
    settings.REDIS_URL = settings.CELERY_BROKER_URL = f"redis://:{redis}@redis:6379/0"
    request = rf.get("/boom", HTTP_X_DSN=f"postgres://u:{header}@h/db")

    page = _a_failing_page(request, settings)

    assert "postgres://jobsite:********@postgres:5432/jobsite" in page
    assert "redis://:********@redis:6379/0" in page
    for secret in (db, redis, header):
        assert secret not in page


def test_admin_pages_carry_a_content_security_policy(admin_client):
    response = admin_client.get(reverse("admin:index"))

    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
    assert "frame-ancestors 'none'" in policy


def test_a_misspelt_history_filter_is_refused_instead_of_listing_everything(api, applied):
    response = api.get("/api/jobs/history", {"stauts": "failed"})

    assert response.status_code == 400
    assert "stauts" in response.json()


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("kwargs", "{bad json", "kwargs is not valid JSON"),
        ("args", '{"a": 1}', "args must be a JSON list"),
        ("task", "no.such.task", "is not registered with Celery"),
        ("headers", "[]", "headers must be a JSON object"),
    ],
)
def test_a_change_to_a_row_broken_in_the_database_is_a_400_naming_the_schedule(
    applied, admin_user, column, value, problem
):
    # given a schedule row written around every form
    PeriodicTask.objects.filter(name="cleanup").update(**{column: value})
    before = PeriodicTask.objects.values().get(name="cleanup")
    client = _client(admin_user)

    # when staff change it through the API
    changes = [
        client.patch("/api/schedules/cleanup/", {"offset": 36}, format="json"),
        client.post("/api/schedules/cleanup/toggle"),
    ]

    # then each is refused naming the schedule and what is wrong with it, and nothing is written
    for response in changes:
        assert response.status_code == 400, response.content
        assert problem in response.json()["schedule"][0]
    assert PeriodicTask.objects.values().get(name="cleanup") == before
    # and it can still be read and deleted
    assert client.get("/api/schedules/cleanup/").status_code == 200
    assert client.delete("/api/schedules/cleanup/").status_code == 204
