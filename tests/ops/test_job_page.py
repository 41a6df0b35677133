"""The per-job page (ops.job_page) and moments to the second everywhere the admin shows a slot or
a start (ops.timefmt). Who may open and press what is in tests/ops/test_permissions.py."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django_celery_beat.models import PeriodicTask

from ops.job_page import cron_in_words
from ops.timefmt import ago, at_second
from scheduler.cron import Cron
from scheduler.models import JobRun
from tests.conftest import audit_rows
from tests.ops.conftest import make_run

pytestmark = pytest.mark.django_db

SECONDS = re.compile(r"\d{2}:\d{2}:\d{2}")


def _page(name: str) -> str:
    return reverse("admin:ops_job", args=[name])


# -- the formatting helper ---------------------------------------------------------------------


def test_a_moment_is_written_to_the_second_in_utc_and_without_the_date_when_today():
    moment = datetime(2026, 12, 6, 6, 19, 55, tzinfo=UTC)
    assert at_second(moment) == "2026-12-06 06:19:55 UTC"
    assert at_second(moment, now=datetime(2026, 12, 6, 23, 0, tzinfo=UTC)) == "06:19:55"
    assert at_second(moment, now=datetime(2026, 12, 5, 23, 0, tzinfo=UTC)) == (
        "2026-12-06 06:19:55 UTC"
    )
    assert at_second(None) == "-"
    assert ago(moment, now=moment + timedelta(seconds=42)) == "42 s ago"
    assert ago(moment, now=moment + timedelta(minutes=3, seconds=5)) == "3 min 5 s ago"
    assert ago(moment, now=moment - timedelta(seconds=9)) == "in 9 s"


@pytest.mark.parametrize(
    ("cron", "offset", "words"),
    [
        ("* * * * *", 0, "every minute at second 0"),
        ("*/5 * * * *", 25, "every 5 minutes at second 25"),
        ("0 * * * *", 20, "hourly at :00:20"),
        ("0 3 * * *", 35, "daily at 03:00:35 UTC"),
        ("0 0 * * 1", 50, "on Mondays at 00:00:50 UTC"),
    ],
)
def test_a_schedule_is_said_in_words_with_its_second(cron, offset, words):
    assert cron_in_words(Cron.parse(cron), offset) == words


def test_an_unusual_schedule_is_still_said_with_its_second():
    words = cron_in_words(Cron.parse("15 9-17 * * 1-5"), 10)
    assert words.endswith("at second 10")
    assert "UTC" in words


# -- seconds in the ledger, the schedule list and the dashboard ------------------------------------


def test_the_ledger_list_and_detail_show_slots_and_starts_to_the_second(admin_client, runs):
    failed = JobRun.objects.get(status="failed")
    ledger = admin_client.get(reverse("admin:scheduler_jobrun_changelist")).content.decode()
    assert at_second(failed.slot) in ledger
    assert "a.m." not in ledger
    assert "p.m." not in ledger

    detail = admin_client.get(
        reverse("admin:scheduler_jobrun_change", args=[failed.pk])
    ).content.decode()
    assert at_second(failed.slot) in detail
    assert at_second(failed.started_at) in detail
    assert at_second(failed.finished_at) in detail
    assert "a.m." not in detail
    assert "p.m." not in detail
    assert _page("live-stats-sync") in detail  # the job links to its page


def test_the_schedule_list_and_dashboard_show_next_starts_to_the_second(admin_client, schedules):
    schedules_page = admin_client.get(
        reverse("admin:django_celery_beat_periodictask_changelist")
    ).content.decode()
    starts = re.findall(r'class="ops-start">([^<]+)<', schedules_page)
    assert starts
    assert all(SECONDS.search(s) for s in starts)
    assert all(
        re.fullmatch(r"\d{2}:\d{2}:\d{2}|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", s) for s in starts
    )
    assert _page("cleanup") in schedules_page

    dashboard = admin_client.get(reverse("ops-dashboard")).content.decode()
    assert _page("cleanup") in dashboard
    # referral-tier2 starts every minute at :00: its next start is the next minute boundary.
    row = re.search(r'data-job="referral-tier2">(.*?)</tr>', dashboard, re.S).group(1)
    assert re.search(r"<td>(\d{2}:\d{2}:00|\d{4}-\d\d-\d\d \d\d:\d\d:00 UTC)</td>", row)


# -- the per-job page --------------------------------------------------------------------------


def test_the_job_page_shows_schedule_next_starts_last_run_strip_trends_and_incidents(
    admin_client, runs
):
    from monitoring.models import Incident

    failed = JobRun.objects.get(status="failed")
    Incident.objects.create(
        job=failed.job,
        kind="failures",
        opened_at=failed.finished_at,
        first_run_id=failed.pk,
        first_slot=failed.slot,
        last_run_id=failed.pk,
        last_slot=failed.slot,
        summary="live-stats-sync failed 3 times in a row",
    )
    response = admin_client.get(_page("referral-tier3"))
    body = response.content.decode()
    assert response.status_code == 200
    assert "every minute at second 15" in body
    assert "<code>15 * * * * *</code>" in body
    assert 'data-enabled="yes"' in body
    next_starts = re.findall(r'class="ops-start">([^<]+)<', body)
    assert len(next_starts) == 5
    assert all(s.endswith(":15") or ":15 " in s for s in next_starts)
    # The ledger's newest row, a minute or so ago: "N s ago", not "-".
    assert re.search(
        r'data-status="succeeded">succeeded</span></a>,\s+started \d+ (s|min \d+ s) ago', body
    )
    assert body.count('class="ops-cell"') == 50  # 60 runs in the fixture; the newest 50
    assert 'data-chart="job-duration"' in body
    assert 'data-chart="job-lateness"' in body
    assert body.count('class="bar"') >= 100
    assert 'id="ops-run-now"' in body
    assert 'id="ops-switch"' in body
    assert "Open incidents of referral-tier3" in body

    failing = admin_client.get(_page("live-stats-sync")).content.decode()
    assert "live-stats-sync failed 3 times in a row" in failing
    assert 'data-status="failed"' in failing
    assert f'title="{at_second(failed.slot)} · failed' in failing


def test_the_job_page_of_an_unknown_job_is_404(admin_client, schedules):
    assert admin_client.get(_page("no-such-job")).status_code == 404


def test_the_job_page_reads_one_job_with_a_few_queries(
    admin_client, runs, django_assert_max_num_queries
):
    # Session, user and permissions are the admin's; the page itself reads the schedule, the
    # newest 50 runs, the last enable/disable and the open incidents, each bounded.
    with CaptureQueriesContext(connection) as queries:
        admin_client.get(_page("referral-tier2"))
    run_queries = [q["sql"] for q in queries if "scheduler_jobrun" in q["sql"]]
    assert run_queries
    assert all("LIMIT" in sql for sql in run_queries)
    assert len(queries) <= 15


def test_run_now_on_the_job_page_queues_a_run_and_links_to_it(admin_client, schedules):
    response = admin_client.post(
        reverse("admin:ops_job_run_now", args=["cleanup"]),
        {"reason": "re-run after fix"},
        follow=True,
    )
    run = JobRun.objects.get(job="cleanup")
    assert (run.trigger, run.status) == ("admin", "queued")
    assert "re-run after fix" in run.reason
    body = response.content.decode()
    assert reverse("admin:scheduler_jobrun_change", args=[run.pk]) in body
    assert 'id="ops-queued-run"' in body
    assert audit_rows().get(action="job.run").reason == "re-run after fix"


def test_disable_with_a_note_writes_the_note_into_the_audit_and_shows_it(admin_client, schedules):
    url = reverse("admin:ops_job_set_enabled", args=["cleanup"])
    response = admin_client.post(
        url, {"enabled": "0", "note": "payments provider  down, ticket OPS-12"}, follow=True
    )
    task = PeriodicTask.objects.get(name="cleanup")
    assert not task.enabled
    event = audit_rows().get(action="schedule.disable")
    assert (event.username, event.via, event.object_repr) == ("admin", "admin", "cleanup")
    assert event.reason == "payments provider down, ticket OPS-12"
    body = response.content.decode()
    assert 'data-enabled="no"' in body
    assert "payments provider down, ticket OPS-12" in body
    assert "by admin" in body

    # Enabling again is one click; its note is optional.
    admin_client.post(url, {"enabled": "1", "note": ""})
    assert PeriodicTask.objects.get(name="cleanup").enabled
    assert audit_rows().filter(action="schedule.enable").count() == 1


def test_disable_without_a_note_is_refused_and_changes_nothing(admin_client, schedules):
    response = admin_client.post(
        reverse("admin:ops_job_set_enabled", args=["cleanup"]),
        {"enabled": "0", "note": "  "},
        follow=True,
    )
    assert "Say why in the note" in response.content.decode()
    assert PeriodicTask.objects.get(name="cleanup").enabled
    assert not audit_rows().exists()


def test_the_job_page_shows_a_run_queued_for_a_slot_ahead_apart_from_the_last_run(
    admin_client, schedules
):
    now = datetime.now(UTC)
    done = make_run("referral-tier3", now.replace(microsecond=0) - timedelta(seconds=70))
    ahead = JobRun.objects.create(
        job="referral-tier3", slot=now.replace(microsecond=0) + timedelta(seconds=40)
    )
    body = admin_client.get(_page("referral-tier3")).content.decode()
    last = re.search(r'id="ops-job-last">(.*?)</td>', body, re.S).group(1)
    assert reverse("admin:scheduler_jobrun_change", args=[done.pk]) in last
    assert "queued:" in body
    assert f"#{ahead.pk}" in body


# -- the schedule change form ------------------------------------------------------------------


def test_a_jobs_form_offers_only_a_crontab_with_the_offset_next_to_the_cron(
    admin_client, schedules
):
    task = schedules["prediction-matcher"]
    body = admin_client.get(_change_url(task)).content.decode()
    assert 'name="interval"' not in body
    assert 'name="solar"' not in body
    assert 'name="clocked"' not in body
    assert "every 5 minutes at second 25" in body
    assert "Last run (ledger)" in body
    # The offset comes right after the cron, before the next starts and the arguments.
    assert body.index('id="id_cron_expression"') < body.index(
        'id="id_job_schedule-0-offset_seconds"'
    )
    assert body.index('id="id_job_schedule-0-offset_seconds"') < body.index(
        "Next starts and collisions"
    )
    # Our help texts, not django-celery-beat's.
    assert "Short Description For This Task" not in body
    assert "jobs run on a crontab" not in body
    assert "Only for a task not in the list above" in body


def test_the_schedule_form_shows_the_last_run_from_the_ledger(admin_client, runs, schedules):
    failed = JobRun.objects.get(status="failed")
    body = admin_client.get(_change_url(schedules["live-stats-sync"])).content.decode()
    field = re.search(r"field-last_run_ledger.*?</div>\s*</div>", body, re.S).group(0)
    assert 'data-status="failed"' in field
    assert at_second(failed.slot) in field
    assert " ago)" in field


def test_a_task_that_is_not_a_job_keeps_interval_solar_and_clocked(admin_client, schedules):
    from django_celery_beat.models import IntervalSchedule

    every = IntervalSchedule.objects.create(every=30, period="seconds")
    other = PeriodicTask.objects.create(
        name="celery backend cleanup", task="celery.backend_cleanup", interval=every
    )
    body = admin_client.get(_change_url(other)).content.decode()
    assert 'name="interval"' in body
    assert 'name="solar"' in body
    assert 'name="clocked"' in body


def test_a_job_cannot_be_given_an_interval_and_solar_is_refused_clearly(admin_client, schedules):
    from django_celery_beat.models import IntervalSchedule, SolarSchedule

    from tests.ops.test_admin import _form_data

    every = IntervalSchedule.objects.create(every=30, period="seconds")
    sunrise = SolarSchedule.objects.create(event="sunrise", latitude=51.5, longitude=0)
    add = reverse("admin:django_celery_beat_periodictask_add")
    job = schedules["cleanup"]
    response = admin_client.post(
        add,
        {
            **_form_data(job, name="cleanup-2", crontab="", cron_expression="", interval=every.pk),
            "job_schedule-INITIAL_FORMS": "0",
            "job_schedule-0-id": "",
            "job_schedule-0-periodic_task": "",
        },
    )
    assert response.status_code == 200
    assert "jobs run on a crontab" in response.content.decode()
    assert not PeriodicTask.objects.filter(name="cleanup-2").exists()

    response = admin_client.post(
        add,
        {
            **_form_data(job, name="at sunrise", crontab="", cron_expression="", solar=sunrise.pk),
            "regtask": "celery.backend_cleanup",
            "task": "celery.backend_cleanup",
            "job_schedule-INITIAL_FORMS": "0",
            "job_schedule-0-id": "",
            "job_schedule-0-periodic_task": "",
        },
    )
    assert response.status_code == 200
    assert "Solar schedules need the ephem package" in response.content.decode()
    assert not PeriodicTask.objects.filter(name="at sunrise").exists()


def _change_url(task: PeriodicTask) -> str:
    return reverse("admin:django_celery_beat_periodictask_change", args=[task.pk])


def test_payout_retries_are_spelt_properly_in_the_admin(admin_client):
    index = admin_client.get(reverse("admin:index")).content.decode()
    assert "Payout retries" in index
    assert "retrys" not in index


def test_the_page_of_a_job_without_a_schedule_says_so_and_offers_no_switch(admin_client, runs):
    PeriodicTask.objects.filter(name="referral-tier3").delete()
    body = admin_client.get(_page("referral-tier3")).content.decode()
    assert "no schedule" in body
    assert 'id="ops-switch"' not in body
    assert body.count('class="ops-cell"') == 50  # its history stays in the ledger
    response = admin_client.post(
        reverse("admin:ops_job_set_enabled", args=["referral-tier3"]), {"enabled": "1"}
    )
    assert response.status_code == 404
