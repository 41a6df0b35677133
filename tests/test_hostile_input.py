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
from ops.models import AuditEvent
from scheduler.models import JobRun, JobSchedule
from scheduler.services.schedules import schedules_apply
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
        ("runs", JobRun.objects.count(), "audit", AuditEvent.objects.count()),
    ]


@pytest.fixture
def applied() -> dict[str, PeriodicTask]:
    schedules_apply(profile="production")
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
    with pytest.raises(ValidationError, match="Mars/Base"):
        CrontabSchedule.objects.create(minute="0", timezone="Mars/Base")
    assert not CrontabSchedule.objects.exists()


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
