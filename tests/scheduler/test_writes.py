"""scheduler.services.writes: every schedule write is audited, with the one tracking rule.

Given / when / then, real PostgreSQL. The admin's and the API's own paths are in tests/ops/; here
the paths that used to bypass a service: the crontab admin (a row shared by several schedules)
and the CLI.
"""

from __future__ import annotations

import getpass
from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from scheduler.audit import Actor
from scheduler.cron import Cron
from scheduler.models import AuditEvent, JobRun, JobSchedule
from scheduler.registry import all_jobs
from scheduler.services.deliveries import delivery_verdict
from scheduler.services.runs import Delivery
from scheduler.services.schedules import crontab_unsaved, schedule_problems
from scheduler.services.writes import (
    crontab_for,
    crontab_save,
    schedule_save,
    schedule_update,
    schedules_apply,
    schedules_remove,
    schedules_set_enabled,
)
from scheduler.validators import OFFSET_ERROR, WriteRefused, check_offset, validate_offset
from tests.conftest import audit_rows

pytestmark = pytest.mark.django_db
LONG_AGO = datetime(2026, 1, 1, tzinfo=UTC)


def _on_shared_crontab(job_names: list[str], cron: str = "* * * * *") -> CrontabSchedule:
    """These jobs' schedules on one crontab row, tracked since long ago and reconciled."""
    crontab = crontab_for(Cron.parse(cron))
    PeriodicTask.objects.filter(name__in=job_names).update(crontab=crontab)
    JobSchedule.objects.update(tracked_since=LONG_AGO, reconciled_until=LONG_AGO)
    return crontab


def _crontab_form(crontab: CrontabSchedule, **fields: str) -> dict[str, object]:
    data = {
        "minute": crontab.minute,
        "hour": crontab.hour,
        "day_of_month": crontab.day_of_month,
        "month_of_year": crontab.month_of_year,
        "day_of_week": crontab.day_of_week,
        "timezone": str(crontab.timezone),
    }
    # django-celery-beat's read-only inline of the schedules on this row
    tasks = list(PeriodicTask.objects.filter(crontab=crontab).order_by("pk"))
    data["periodictask_set-TOTAL_FORMS"] = data["periodictask_set-INITIAL_FORMS"] = len(tasks)
    for i, task in enumerate(tasks):
        data[f"periodictask_set-{i}-id"] = task.pk
        data[f"periodictask_set-{i}-crontab"] = crontab.pk
    return {**data, **fields}


def test_editing_a_shared_crontab_in_the_admin_restarts_tracking_of_every_schedule_on_it(
    admin_client,
):
    # given two jobs whose schedules share one crontab row
    schedules_apply(actor=Actor.system("tests"), profile="production")
    crontab = _on_shared_crontab(["cleanup", "retention-pruning"], "0 3 * * *")
    before = timezone.now()

    # when staff edit that row in django-celery-beat's crontab admin
    response = admin_client.post(
        reverse("admin:django_celery_beat_crontabschedule_change", args=[crontab.pk]),
        _crontab_form(crontab, minute="30"),
        REMOTE_ADDR="10.0.0.7",
    )

    # then both schedules expect slots from now on, and the change is audited per schedule
    assert response.status_code == 302, list(response.context["errors"])
    for stored in JobSchedule.objects.filter(periodic_task__crontab=crontab):
        assert stored.tracked_since >= before
        assert stored.reconciled_until is None
    untouched = JobSchedule.objects.exclude(periodic_task__crontab=crontab)
    assert set(untouched.values_list("tracked_since", flat=True)) == {LONG_AGO}
    crontab_row = audit_rows().get(action="crontab.save")
    assert (crontab_row.username, crontab_row.ip, crontab_row.via) == ("admin", "10.0.0.7", "admin")
    assert crontab_row.before == {"cron": "0 3 * * *"}
    assert crontab_row.after["cron"] == "30 3 * * *"
    assert sorted(crontab_row.after["schedules"]) == ["cleanup", "retention-pruning"]
    updates = audit_rows().filter(action="schedule.update")
    assert sorted(updates.values_list("object_repr", flat=True)) == ["cleanup", "retention-pruning"]
    assert {(e.before["cron"], e.after["cron"]) for e in updates} == {("0 3 * * *", "30 3 * * *")}


def test_a_message_queued_before_a_shared_crontab_edit_is_superseded_not_refused(
    register_job, admin_client
):
    # given a job every minute at offset 59, whose beat message for this minute waits
    job = register_job("crontab-edited")
    crontab = crontab_for(Cron.parse("* * * * *"))
    task = PeriodicTask.objects.create(name=job.name, task=job.task, crontab=crontab)
    JobSchedule.objects.create(periodic_task=task, offset_seconds=59, tracked_since=LONG_AGO)
    slot = timezone.now().replace(second=59, microsecond=0)

    # when staff move the shared crontab row to 03:00 daily while it waits
    response = admin_client.post(
        reverse("admin:django_celery_beat_crontabschedule_change", args=[crontab.pk]),
        _crontab_form(crontab, minute="0", hour="3"),
    )
    assert response.status_code == 302, list(response.context["errors"])

    # then the worker sees a message overtaken by a staff change, not a forged one
    delivery = Delivery(job=job, slot=slot, trigger="beat", task_id="beat-1", worker="w1")
    verdict = delivery_verdict(delivery, now=slot + timedelta(seconds=1))
    assert verdict is not None
    assert verdict.status == JobRun.Status.SUPERSEDED


def test_saving_a_crontab_unchanged_restarts_nothing_and_audits_nothing():
    schedules_apply(actor=Actor.system("tests"), profile="production")
    crontab = _on_shared_crontab(["cleanup"], "0 3 * * *")

    crontab_save(actor=Actor.system("test"), crontab=crontab)
    crontab_save(actor=Actor.system("test"), crontab=crontab)

    assert JobSchedule.objects.get(periodic_task__name="cleanup").tracked_since == LONG_AGO
    assert not audit_rows().exists()


def test_deleting_a_crontab_in_the_admin_deletes_its_schedules_audited(admin_client):
    schedules_apply(actor=Actor.system("tests"), profile="production")
    crontab = _on_shared_crontab(["cleanup", "retention-pruning"], "0 3 * * *")

    response = admin_client.post(
        reverse("admin:django_celery_beat_crontabschedule_delete", args=[crontab.pk]),
        {"post": "yes"},
    )

    assert response.status_code == 302
    assert not PeriodicTask.objects.filter(name__in=["cleanup", "retention-pruning"]).exists()
    deleted = audit_rows().filter(action="schedule.delete")
    assert sorted(deleted.values_list("object_repr", flat=True)) == ["cleanup", "retention-pruning"]
    assert audit_rows().get(action="crontab.delete").before["cron"] == "0 3 * * *"


def test_schedules_apply_and_remove_from_the_cli_are_audited_as_the_os_user():
    # when an operator applies the defaults twice, then removes one job's schedule
    call_command("schedules", "apply", "--profile", "production", stdout=None)
    call_command("schedules", "apply", "--profile", "production", stdout=None)
    call_command("schedules", "remove", "cleanup", stdout=None)

    # then one row per schedule created (the second apply changed nothing), one per removal
    created = audit_rows().filter(action="schedule.create")
    assert created.count() == len(all_jobs())
    removed = audit_rows().get(action="schedule.delete")
    assert removed.object_repr == "cleanup"
    assert removed.before["cron"] == "0 3 * * *"
    assert set(audit_rows().values_list("via", "username", "ip")) == {
        ("cli", getpass.getuser(), None)
    }


def test_apply_reset_restarts_tracking_and_audits_what_it_restored():
    schedules_apply(actor=Actor.system("tests"), profile="production")
    task = PeriodicTask.objects.get(name="cleanup")
    schedule_update(actor=Actor.system("test"), task=task, offset=7)
    JobSchedule.objects.update(tracked_since=LONG_AGO)
    AuditEvent.objects.all().delete()

    schedules_apply(actor=Actor.cli("manage.py schedules apply"), reset=True)

    stored = JobSchedule.objects.get(periodic_task=task)
    assert stored.offset_seconds == 35
    assert stored.tracked_since > LONG_AGO
    event = audit_rows().get()
    assert (event.action, event.before["offset"], event.after["offset"]) == (
        "schedule.update",
        7,
        35,
    )


def test_enabling_twice_changes_nothing_the_second_time():
    schedules_apply(actor=Actor.system("tests"), profile="production")
    tasks = PeriodicTask.objects.filter(name="cleanup")
    schedules_set_enabled(actor=Actor.system("test"), tasks=tasks, enabled=False)
    JobSchedule.objects.update(tracked_since=LONG_AGO)

    first = schedules_set_enabled(actor=Actor.system("test"), tasks=tasks, enabled=True)
    stamped = JobSchedule.objects.get(periodic_task__name="cleanup").tracked_since
    second = schedules_set_enabled(actor=Actor.system("test"), tasks=tasks, enabled=True)

    assert (first, second) == (1, 0)
    assert stamped > LONG_AGO
    assert JobSchedule.objects.get(periodic_task__name="cleanup").tracked_since == stamped
    assert audit_rows().filter(action="schedule.enable").count() == 1


@pytest.mark.parametrize("bad", [60, -1, True, "5", 5.0])
def test_the_offset_rule_is_one_validator_for_model_services_and_registry(bad):
    with pytest.raises(ValidationError) as refused:
        validate_offset(bad)
    assert refused.value.messages == [OFFSET_ERROR]
    with pytest.raises(WriteRefused, match="between 0 and 59"):
        check_offset(bad)
    field = JobSchedule._meta.get_field("offset_seconds")
    assert validate_offset in field.validators


def test_a_refused_update_writes_nothing():
    schedules_apply(actor=Actor.system("tests"), profile="production")
    task = PeriodicTask.objects.get(name="cleanup")

    with pytest.raises(WriteRefused) as refused:
        schedule_update(actor=Actor.system("test"), task=task, offset=60)

    assert refused.value.field == "offset"
    assert JobSchedule.objects.get(periodic_task=task).offset_seconds == 35
    assert not audit_rows().exists()


def test_a_schedule_added_in_the_admin_is_created_with_its_offset_and_audited(admin_client):
    from tests.ops.test_admin import _form_data

    # given cleanup's schedule was removed
    schedules_apply(actor=Actor.system("tests"), profile="production")
    removed = PeriodicTask.objects.select_related("crontab", "job_schedule").get(name="cleanup")
    form = _form_data(removed, **{"job_schedule-0-offset_seconds": "36"})
    schedules_remove(actor=Actor.system("tests"), names=["cleanup"])
    before = timezone.now()

    # when staff add it again in the admin
    response = admin_client.post(
        reverse("admin:django_celery_beat_periodictask_add"),
        {
            **form,
            "job_schedule-INITIAL_FORMS": "0",
            "job_schedule-0-id": "",
            "job_schedule-0-periodic_task": "",
        },
        REMOTE_ADDR="10.0.0.8",
    )

    # then it exists with its offset, expects slots from now, and one audit row says who
    assert response.status_code == 302, list(response.context["errors"])
    stored = JobSchedule.objects.get(periodic_task__name="cleanup")
    assert stored.offset_seconds == 36
    assert stored.tracked_since >= before
    event = audit_rows().get()
    assert (event.action, event.username, event.ip) == ("schedule.create", "admin", "10.0.0.8")
    assert event.before is None
    assert event.after["offset"] == 36


def test_enabling_a_schedule_in_its_admin_form_restarts_tracking(admin_client):
    from tests.ops.test_admin import _form_data

    schedules_apply(actor=Actor.system("tests"), profile="production")
    task = PeriodicTask.objects.get(name="cleanup")
    schedules_set_enabled(
        actor=Actor.system("test"), tasks=PeriodicTask.objects.filter(pk=task.pk), enabled=False
    )
    JobSchedule.objects.update(tracked_since=LONG_AGO)
    task = PeriodicTask.objects.select_related("crontab", "job_schedule").get(pk=task.pk)

    response = admin_client.post(
        reverse("admin:django_celery_beat_periodictask_change", args=[task.pk]),
        _form_data(task, enabled="on"),
    )

    assert response.status_code == 302, list(response.context["errors"])
    stored = JobSchedule.objects.get(periodic_task=task)
    assert stored.tracked_since > LONG_AGO
    assert stored.reconciled_until is None
    event = audit_rows().get(via="admin")
    assert (event.action, event.before["enabled"], event.after["enabled"]) == (
        "schedule.update",
        False,
        True,
    )


def test_a_schedule_saved_with_an_unsaved_crontab_stores_it_once_and_restarts_tracking():
    # given a schedule, and the admin form's typed cron as an unsaved row (validation wrote none)
    schedules_apply(actor=Actor.system("tests"), profile="production")
    JobSchedule.objects.update(tracked_since=LONG_AGO)
    task = PeriodicTask.objects.get(name="cleanup")
    before = CrontabSchedule.objects.count()
    task.crontab = crontab_unsaved(Cron.parse("*/7 * * * *"))
    assert schedule_problems(task, {task.task}, check_crontab=True) == []
    assert CrontabSchedule.objects.count() == before

    # when the save service saves it, and another schedule is saved on the same cron
    schedule_save(actor=Actor.system("test"), task=task, offset=None)
    other = PeriodicTask.objects.get(name="settlement")
    other.crontab = crontab_unsaved(Cron.parse("*/7 * * * *"))
    schedule_save(actor=Actor.system("test"), task=other, offset=None)

    # then one row was written, both use it, tracking restarted and each save was audited
    assert CrontabSchedule.objects.count() == before + 1
    assert other.crontab_id == task.crontab_id is not None
    assert JobSchedule.objects.get(periodic_task=task).tracked_since > LONG_AGO
    assert [e.after["cron"] for e in audit_rows().order_by("pk")] == ["*/7 * * * *"] * 2
