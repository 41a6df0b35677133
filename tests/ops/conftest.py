from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest
from django_celery_beat.models import PeriodicTask

from core.permissions import OPERATORS
from scheduler.audit import Actor
from scheduler.models import JobRun, JobSchedule
from scheduler.services.writes import schedules_apply


@pytest.fixture
def schedules(_module_schedules: dict[str, PeriodicTask] | None) -> dict[str, PeriodicTask]:
    """Every registered job applied with its production cron and default offset: made once per
    module (and worker) and rolled back to after each test (tests/conftest.py `module_db`),
    per test in a module with `transaction=True` tests."""
    if _module_schedules is None:
        return applied_schedules()
    return copy.deepcopy(_module_schedules)


@pytest.fixture(scope="module")
def _module_schedules(module_db: bool) -> dict[str, PeriodicTask] | None:
    return applied_schedules() if module_db else None


def applied_schedules() -> dict[str, PeriodicTask]:
    schedules_apply(actor=Actor.system("tests"), profile="production")
    # As if applied long before the moments the tests look at (beat liveness ignores boundaries
    # from before a schedule existed).
    JobSchedule.objects.update(tracked_since=datetime(2026, 1, 1, tzinfo=UTC))
    return {t.name: t for t in PeriodicTask.objects.select_related("crontab", "job_schedule")}


def make_run(job: str, slot: datetime, status: str = "succeeded", **fields: object) -> JobRun:
    return JobRun.objects.create(**run_values(job, slot, status, **fields))


def run_values(job: str, slot: datetime, status: str = "succeeded", **fields: object) -> dict:
    """The columns of a finished beat run of `job` at `slot` (`fields` override them)."""
    started = fields.pop("started_at", slot + timedelta(milliseconds=20))
    duration = fields.pop("duration_ms", 150)
    values: dict[str, object] = {
        "job": job,
        "slot": slot,
        "status": status,
        "trigger": "beat",
        "started_at": started,
        "finished_at": started + timedelta(milliseconds=duration),
        "duration_ms": duration,
        "lateness_ms": int((started - slot).total_seconds() * 1000),
        "task_id": f"task-{job}-{slot:%H%M%S}",
    }
    values.update(fields)
    return values


@pytest.fixture
def runs(schedules: dict[str, PeriodicTask]) -> list[JobRun]:
    """An hour of ledger rows ending one minute ago: staggered starts, one failure, one
    skipped_lock, one duplicate. Per test: its window moves with the clock. One INSERT (the
    ledger has no save() or signal of its own to skip)."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    rows = []
    for minute in range(60, 0, -1):
        boundary = now - timedelta(minutes=minute)
        rows.append(run_values("referral-tier2", boundary))
        rows.append(run_values("referral-tier3", boundary + timedelta(seconds=15)))
    rows.append(
        run_values(
            "live-stats-sync",
            now - timedelta(minutes=3) + timedelta(seconds=45),
            "failed",
            error="ValueError: the service has a bug",
            traceback="Traceback (most recent call last):\n  ...\n"
            "ValueError: the service has a bug",
        )
    )
    rows.append(run_values("settlement", now - timedelta(minutes=10, seconds=-40), "skipped_lock"))
    made = JobRun.objects.bulk_create([JobRun(**values) for values in rows])
    owner = made[0]
    made.append(
        JobRun.objects.create(
            job=owner.job,
            slot=owner.slot,
            attempt=owner.attempt,
            status="duplicate",
            duplicate_of=owner,
            trigger="beat",
        )
    )
    return made


@pytest.fixture
def staff_token(django_user_model) -> str:
    """A staff user in `jobsite operators` who may also create and delete schedules: every
    endpoint answers it (who may do what is tests/ops/test_permissions.py's subject)."""
    from django.contrib.auth.models import Group, Permission
    from rest_framework.authtoken.models import Token

    user = django_user_model.objects.create_user("operator", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name=OPERATORS))
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="django_celery_beat",
            codename__in=["add_periodictask", "delete_periodictask"],
        )
    )
    return Token.objects.create(user=user).key


@pytest.fixture
def api(client, staff_token):
    """A Django test client that sends the staff user's token."""
    client.defaults["HTTP_AUTHORIZATION"] = f"Token {staff_token}"
    return client
