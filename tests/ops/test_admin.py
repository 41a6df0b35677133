"""Admin: smoke tests for every registered model, and the scheduler's admin flows."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse
from django_celery_beat.models import CrontabSchedule, PeriodicTask, PeriodicTasks

from monitoring.models import AlertDelivery, Incident
from scheduler.models import AuditEvent, JobRun, JobSchedule
from tests.conftest import audit_rows

pytestmark = pytest.mark.django_db

REGISTERED = sorted(
    (model._meta.app_label, model._meta.model_name) for model in admin.site._registry
)


@pytest.fixture
def everything(runs, admin_user):
    """At least one row for the scheduler's and ops' models."""
    AuditEvent.objects.create(
        user=admin_user,
        username="admin",
        via="admin",
        action="job.run",
        object_type="job",
        object_repr="cleanup",
    )
    failed = next(run for run in runs if run.status == "failed")
    incident = Incident.objects.create(
        job=failed.job,
        kind="failures",
        opened_at=failed.finished_at,
        first_run_id=failed.pk,
        first_slot=failed.slot,
        last_run_id=failed.pk,
        last_slot=failed.slot,
        summary=f"{failed.job} failed 3 times in a row",
    )
    AlertDelivery.objects.create(
        incident=incident, event="opened", channel="webhook", target="https://chat.example.com"
    )
    return runs


@pytest.mark.parametrize(("app_label", "model_name"), REGISTERED)
def test_every_registered_model_has_a_working_changelist_search_and_form(
    admin_client, everything, app_label, model_name
):
    model = next(
        m
        for m in admin.site._registry
        if m._meta.model_name == model_name and m._meta.app_label == app_label
    )
    model_admin = admin.site._registry[model]
    changelist = reverse(f"admin:{app_label}_{model_name}_changelist")

    assert admin_client.get(changelist).status_code == 200
    if model_admin.search_fields:
        assert admin_client.get(changelist, {"q": "a"}).status_code == 200
    obj = model.objects.first()
    if obj is not None:
        change = reverse(f"admin:{app_label}_{model_name}_change", args=[obj.pk])
        assert admin_client.get(change).status_code == 200
    if model_admin.has_add_permission(_request(admin_client)):
        assert admin_client.get(reverse(f"admin:{app_label}_{model_name}_add")).status_code == 200


def _request(client):
    from django.contrib.auth import get_user_model
    from django.test import RequestFactory

    request = RequestFactory().get("/")
    request.user = get_user_model().objects.get(username="admin")
    return request


def _form_data(task: PeriodicTask, **overrides):
    schedule = task.job_schedule
    data = {
        "name": task.name,
        "regtask": task.task,
        "task": task.task,
        "enabled": "on" if task.enabled else "",
        "description": task.description,
        "cron_expression": f"{task.crontab.minute} {task.crontab.hour} {task.crontab.day_of_month}"
        f" {task.crontab.month_of_year} {task.crontab.day_of_week}",
        "crontab": task.crontab_id,
        "args": task.args,
        "kwargs": task.kwargs,
        "queue": task.queue or "",
        "exchange": "",
        "routing_key": "",
        "priority": task.priority if task.priority is not None else "",
        "headers": task.headers,
        "expire_seconds": "",
        "job_schedule-TOTAL_FORMS": "1",
        "job_schedule-INITIAL_FORMS": "1",
        "job_schedule-MIN_NUM_FORMS": "1",
        "job_schedule-MAX_NUM_FORMS": "1",
        "job_schedule-0-id": schedule.pk,
        "job_schedule-0-periodic_task": task.pk,
        "job_schedule-0-offset_seconds": schedule.offset_seconds,
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def _change_url(task):
    return reverse("admin:django_celery_beat_periodictask_change", args=[task.pk])


def test_the_schedule_list_shows_six_field_cron_next_starts_and_last_status(admin_client, runs):
    response = admin_client.get(reverse("admin:django_celery_beat_periodictask_changelist"))
    body = response.content.decode()
    assert "15 * * * * *" in body  # referral-tier3: offset 15, every minute
    assert 'data-status="succeeded"' in body
    assert 'data-status="failed"' in body  # live-stats-sync's last run
    assert "Run selected tasks" not in body
    assert "Run now" in body


@pytest.mark.parametrize("bad", ["60", "-1", "abc", "1000000000"])
def test_a_bad_offset_is_refused_with_a_clear_message(admin_client, schedules, bad):
    task = schedules["cleanup"]
    response = admin_client.post(
        _change_url(task), _form_data(task, **{"job_schedule-0-offset_seconds": bad})
    )
    assert response.status_code == 200
    assert "between 0 and 59" in response.content.decode()
    assert JobSchedule.objects.get(periodic_task=task).offset_seconds == 35
    assert not audit_rows().exists()


def test_changing_the_offset_saves_audits_and_tells_beat(admin_client, schedules):
    task = schedules["cleanup"]
    before = PeriodicTasks.last_change()
    response = admin_client.post(
        _change_url(task),
        _form_data(task, **{"job_schedule-0-offset_seconds": "36"}),
        REMOTE_ADDR="10.1.2.3",
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    assert JobSchedule.objects.get(periodic_task=task).offset_seconds == 36
    event = audit_rows().get()
    assert (event.action, event.username, event.ip) == ("schedule.update", "admin", "10.1.2.3")
    assert (event.before["offset"], event.after["offset"]) == (35, 36)
    assert PeriodicTasks.last_change() != before


def test_a_colliding_offset_is_warned_before_saving_and_saved_when_accepted(
    admin_client, schedules
):
    task = schedules["referral-tier3"]  # every minute; referral-tier2 runs every minute at :00
    data = _form_data(task, **{"job_schedule-0-offset_seconds": "0"})

    warned = admin_client.post(_change_url(task), data)
    assert warned.status_code == 200
    assert "same second as referral-tier2" in warned.content.decode()
    assert JobSchedule.objects.get(periodic_task=task).offset_seconds == 15

    accepted = admin_client.post(_change_url(task), {**data, "accept_collision": "on"})
    assert accepted.status_code == 302
    assert JobSchedule.objects.get(periodic_task=task).offset_seconds == 0


def test_a_cron_expression_reschedules(admin_client, schedules):
    task = schedules["cleanup"]
    response = admin_client.post(_change_url(task), _form_data(task, cron_expression="@hourly"))
    assert response.status_code == 302
    task.refresh_from_db()
    assert (task.crontab.minute, task.crontab.hour) == ("0", "*")
    assert audit_rows().get().after["cron"] == "0 * * * *"


@pytest.mark.parametrize(
    ("why", "overrides"),
    [
        # every 7 minutes at :30 is the same second as an every-minute job at :30
        ("collision", {"job_schedule-0-offset_seconds": "30"}),
        ("bad offset", {"job_schedule-0-offset_seconds": "60"}),
        ("bad kwargs", {"kwargs": '{"slot": "2026-01-01"}'}),
    ],
)
def test_a_refused_form_with_a_new_cron_writes_no_crontab_and_no_audit_row(
    admin_client, schedules, why, overrides
):
    # given a cron no crontab row holds yet
    task = schedules["cleanup"]
    crontabs = set(CrontabSchedule.objects.values_list("pk", flat=True))
    # when the form is refused for another field
    response = admin_client.post(
        _change_url(task), _form_data(task, cron_expression="*/7 * * * *", **overrides)
    )
    # then nothing was written: validation built the crontab unsaved
    assert response.status_code == 200, why
    assert set(CrontabSchedule.objects.values_list("pk", flat=True)) == crontabs
    assert not audit_rows().exists()
    task.refresh_from_db()
    assert (task.crontab.minute, task.crontab.hour) == ("0", "3")


def test_a_new_cron_is_stored_once_by_the_save_and_an_equal_row_is_reused(admin_client, schedules):
    task = schedules["cleanup"]
    before = CrontabSchedule.objects.count()

    response = admin_client.post(_change_url(task), _form_data(task, cron_expression="*/7 * * * *"))
    assert response.status_code == 302
    task.refresh_from_db()
    assert (task.crontab.minute, task.crontab.hour) == ("*/7", "*")
    assert CrontabSchedule.objects.count() == before + 1
    assert audit_rows().get().after["cron"] == "*/7 * * * *"

    other = schedules["settlement"]
    response = admin_client.post(
        _change_url(other), _form_data(other, cron_expression="*/7 * * * *")
    )
    assert response.status_code == 302
    other.refresh_from_db()
    assert other.crontab_id == task.crontab_id
    assert CrontabSchedule.objects.count() == before + 1


def test_an_invalid_cron_expression_names_the_field(admin_client, schedules):
    task = schedules["cleanup"]
    response = admin_client.post(_change_url(task), _form_data(task, cron_expression="0 0 31 2 *"))
    assert response.status_code == 200
    assert "never fires" in response.content.decode()


def test_bulk_disable_and_enable_are_audited_and_tell_beat(admin_client, schedules):
    changelist = reverse("admin:django_celery_beat_periodictask_changelist")
    ids = [schedules["cleanup"].pk, schedules["settlement"].pk]
    before = PeriodicTasks.last_change()

    admin_client.post(changelist, {"action": "disable_tasks", "_selected_action": ids})

    assert not PeriodicTask.objects.filter(pk__in=ids, enabled=True).exists()
    assert PeriodicTasks.last_change() != before
    events = audit_rows().filter(action="schedule.disable")
    assert sorted(e.object_repr for e in events) == ["cleanup", "settlement"]
    assert all(e.before["enabled"] and not e.after["enabled"] for e in events)

    admin_client.post(changelist, {"action": "toggle_tasks", "_selected_action": ids})
    assert PeriodicTask.objects.filter(pk__in=ids, enabled=True).count() == 2
    assert audit_rows().filter(action="schedule.enable").count() == 2


def test_run_now_goes_through_the_run_path_and_is_audited(admin_client, schedules):
    task = schedules["cleanup"]
    response = admin_client.post(
        reverse("admin:django_celery_beat_periodictask_run_now", args=[task.pk]),
        REMOTE_ADDR="10.9.8.7",
    )
    assert response.status_code == 302
    run = JobRun.objects.get(job="cleanup")
    assert (run.trigger, run.status) == ("admin", "queued")
    assert "10.9.8.7" in run.reason
    assert "admin" in run.reason
    event = audit_rows().get(action="job.run")
    assert event.after["run_id"] == run.pk
    assert event.ip == "10.9.8.7"


def test_the_run_now_action_runs_each_selected_job(admin_client, schedules):
    ids = [schedules["cleanup"].pk, schedules["settlement"].pk]
    admin_client.post(
        reverse("admin:django_celery_beat_periodictask_changelist"),
        {"action": "run_now", "_selected_action": ids},
    )
    assert sorted(JobRun.objects.values_list("job", flat=True)) == ["cleanup", "settlement"]


def test_a_failed_run_shows_its_traceback_and_result_link_and_can_be_retried(admin_client, runs):
    failed = JobRun.objects.get(status="failed")
    page = admin_client.get(reverse("admin:scheduler_jobrun_change", args=[failed.pk]))
    body = page.content.decode()
    assert "ValueError: the service has a bug" in body
    assert 'id="ops-retry"' in body

    admin_client.post(reverse("admin:scheduler_jobrun_retry", args=[failed.pk]))

    retry = JobRun.objects.get(job=failed.job, slot=failed.slot, attempt=2)
    assert (retry.trigger, retry.status) == ("retry", "queued")
    assert audit_rows().get(action="run.retry").after["run_id"] == retry.pk


def test_bulk_retry_retries_failed_runs_and_explains_the_others(admin_client, runs):
    failed = JobRun.objects.get(status="failed")
    ok = JobRun.objects.filter(status="succeeded").first()
    response = admin_client.post(
        reverse("admin:scheduler_jobrun_changelist"),
        {"action": "retry_runs", "_selected_action": [failed.pk, ok.pk]},
        follow=True,
    )
    assert JobRun.objects.filter(trigger="retry").count() == 1
    assert "only failed, lost, missed or expired runs are retried" in response.content.decode()


def test_the_ledger_filters_by_job_status_and_trigger(admin_client, runs):
    url = reverse("admin:scheduler_jobrun_changelist")
    response = admin_client.get(url, {"job": "live-stats-sync", "status": "failed"})
    assert response.status_code == 200
    assert response.context["cl"].result_count == 1
    assert admin_client.get(url, {"trigger": "beat"}).context["cl"].result_count == len(runs)


def test_audit_events_cannot_be_changed_or_deleted(admin_client, everything):
    event = audit_rows().get()
    url = reverse("admin:scheduler_auditevent_change", args=[event.pk])
    admin_client.post(url, {"username": "someone-else"})
    assert audit_rows().get().username == "admin"
    delete = reverse("admin:scheduler_auditevent_delete", args=[event.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert audit_rows().count() == 1


def test_the_dashboard_shows_statistics_and_draws_its_charts(admin_client, runs):
    response = admin_client.get(reverse("ops-dashboard"), {"window": "6h"})
    body = response.content.decode()
    assert response.status_code == 200
    for chart in ("starts-per-second", "concurrency", "forecast"):
        assert f'data-chart="{chart}"' in body
    assert body.count('class="bar') >= 60 + 24
    assert 'data-job="referral-tier3"' in body


def test_the_dashboard_is_for_staff_only(client):
    response = client.get(reverse("ops-dashboard"))
    assert response.status_code == 302
    assert "/login/" in response.url


@pytest.mark.parametrize(
    ("overrides", "said"),
    [
        ({"kwargs": '{"slot": "2026-12-07T00:00:50+00:00", "trigger": "manual"}'}, "slot, trigger"),
        ({"kwargs": '{"user_id": 1}'}, "kwargs name user_id"),
    ],
)
def test_the_admin_refuses_kwargs_that_speak_for_the_run_path(
    admin_client, schedules, overrides, said
):
    task = schedules["prize-pool-finalisation"]
    response = admin_client.post(_change_url(task), _form_data(task, **overrides))

    assert response.status_code == 200
    assert said in response.content.decode()
    assert PeriodicTask.objects.get(pk=task.pk).kwargs == "{}"


def test_the_schedule_list_names_a_row_beat_leaves_out(admin_client, schedules):
    PeriodicTask.objects.filter(name="cleanup").update(kwargs='{"user_id": 1}')

    response = admin_client.get(reverse("admin:django_celery_beat_periodictask_changelist"))

    assert "Beat does not send cleanup: kwargs name user_id" in response.content.decode()


def test_the_admin_refuses_a_job_on_an_interval_schedule(admin_client, schedules):
    from django_celery_beat.models import IntervalSchedule

    task = schedules["prize-pool-finalisation"]
    every = IntervalSchedule.objects.create(every=10, period=IntervalSchedule.SECONDS)
    data = _form_data(task, interval=every.pk, crontab="", cron_expression="")

    response = admin_client.post(_change_url(task), data)

    assert response.status_code == 200
    assert "crontab is required" in response.content.decode()
    assert PeriodicTask.objects.get(pk=task.pk).interval_id is None


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("/admin/ops/incident/?job=cleanup", "/admin/monitoring/incident/?job=cleanup"),
        ("/admin/ops/incident/7/change/", "/admin/monitoring/incident/7/change/"),
        ("/admin/ops/alertdelivery/", "/admin/monitoring/alertdelivery/"),
    ],
)
def test_incident_pages_from_before_the_move_to_monitoring_redirect(client, old, new):
    # given a bookmark of an incident page from when incidents were ops' models
    # when it is followed
    response = client.get(old)
    # then it lands on the same page under monitoring, its query kept
    assert response.status_code == 301
    assert response["Location"] == new
