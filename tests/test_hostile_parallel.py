"""Hostile input, the same write many times at once: concurrent API and admin writes of one
schedule serialise, each answered and audited (tests/test_hostile_input.py has the rest; these
commit, so they make their schedules per test)."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django_celery_beat.models import PeriodicTask

from scheduler.audit import Actor
from scheduler.models import JobSchedule
from scheduler.services.writes import schedules_apply
from tests.conftest import audit_rows

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def applied() -> dict[str, PeriodicTask]:
    schedules_apply(actor=Actor.system("tests"), profile="production")
    return {t.name: t for t in PeriodicTask.objects.select_related("crontab", "job_schedule")}


# --- the same write, many times at once -----------------------------------------------------------


def _in_parallel(*calls) -> list[object]:
    """Run each call in its own thread, released together; their results (or exceptions)."""
    import threading

    from django.db import connection

    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = calls[index]()
        except Exception as exc:  # the test asserts there is none
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def _client(user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user)
    return client


def _status(response) -> int | object:
    return getattr(response, "status_code", response)


def test_ten_parallel_patches_of_cron_and_offset_all_succeed(applied, admin_user):
    def patch(minute: int):
        body = {"cron": f"{minute} 3 * * *", "offset": minute}
        return lambda: _client(admin_user).patch("/api/schedules/cleanup/", body, format="json")

    results = _in_parallel(*(patch(minute) for minute in range(10)))

    assert [_status(r) for r in results] == [200] * 10
    task = PeriodicTask.objects.select_related("crontab", "job_schedule").get(name="cleanup")
    # The last writer's cron and offset, together.
    assert task.crontab.minute == str(task.job_schedule.offset_seconds)
    assert audit_rows().filter(object_repr="cleanup").count() == 10


@pytest.mark.parametrize("round_", range(3))
def test_patch_delete_and_toggle_in_parallel_wait_for_each_other(applied, admin_user, round_):
    results = _in_parallel(
        lambda: _client(admin_user).patch(
            "/api/schedules/cleanup/", {"cron": "7 3 * * *", "offset": 7}, format="json"
        ),
        lambda: _client(admin_user).delete("/api/schedules/cleanup/"),
        lambda: _client(admin_user).post("/api/schedules/cleanup/toggle"),
    )

    patched, deleted, toggled = (_status(r) for r in results)
    assert deleted == 204
    assert patched in {200, 404}, results
    assert toggled in {200, 404}, results
    assert not PeriodicTask.objects.filter(name="cleanup").exists()
    assert not JobSchedule.objects.filter(periodic_task__name="cleanup").exists()


def test_two_parallel_toggles_are_two_flips(applied, admin_user):
    results = _in_parallel(
        *(lambda: _client(admin_user).post("/api/schedules/cleanup/toggle"),) * 2
    )

    assert [_status(r) for r in results] == [200, 200]
    assert PeriodicTask.objects.get(name="cleanup").enabled is True  # off, then on again
    assert audit_rows().filter(object_repr="cleanup").count() == 2


def test_two_parallel_admin_toggles_of_two_schedules_are_two_flips_each(applied, admin_user):
    from django.test import Client

    ids = [applied["cleanup"].pk, applied["settlement"].pk]
    changelist = reverse("admin:django_celery_beat_periodictask_changelist")

    def toggle(order: list[int]):
        def post():
            client = Client()
            client.force_login(admin_user)
            return client.post(changelist, {"action": "toggle_tasks", "_selected_action": order})

        return post

    results = _in_parallel(toggle(ids), toggle(ids[::-1]))

    assert [_status(r) for r in results] == [302, 302]
    assert PeriodicTask.objects.filter(pk__in=ids, enabled=True).count() == 2  # off, on again
    assert audit_rows().filter(object_id__in=[str(i) for i in ids]).count() == 4


def test_five_parallel_creates_of_one_job_make_one_schedule(applied, admin_user):
    PeriodicTask.objects.filter(name="cleanup").delete()
    body = {"job": "cleanup", "cron": "0 3 * * *", "offset": 35}

    results = _in_parallel(
        *(lambda: _client(admin_user).post("/api/schedules/", body, format="json"),) * 5
    )

    statuses = sorted(_status(r) for r in results)
    assert statuses == [201, 409, 409, 409, 409], results
    refusals = [r.json() for r in results if _status(r) == 409]
    assert all("already has a schedule" in refusal["job"][0] for refusal in refusals)
    assert PeriodicTask.objects.filter(name="cleanup").count() == 1
