"""Every surface shows the same next start (`scheduler.selectors.next_starts`): the CLI, the API,
the admin's schedule list and change form, the per-job page and the dashboard.

Between a boundary and boundary + offset that boundary's start is still ahead. A daily job whose
boundary is the current minute, with offset 59, makes the difference a day: a surface computing
"the next fire time, then add the offset" would show tomorrow's start.
"""

from __future__ import annotations

import io
import re
import time
from datetime import datetime, timedelta

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from ops.timefmt import at_second
from scheduler.cron import Cron
from scheduler.models import JobSchedule
from scheduler.services.writes import crontab_for

pytestmark = pytest.mark.django_db

MARGIN = 15  # seconds left before the start for every surface to answer


def _daily_at_this_minute(name: str, offset: int) -> datetime:
    """Put `name` on a daily cron whose boundary is the current minute; its start, still ahead."""
    now = timezone.now()
    if now.second > offset - MARGIN:
        time.sleep(60 - now.second - now.microsecond / 1e6 + 0.05)
        now = timezone.now()
    cron = Cron(str(now.minute), str(now.hour), "*", "*", "*")
    PeriodicTask.objects.filter(name=name).update(crontab=crontab_for(cron))
    JobSchedule.objects.filter(periodic_task__name=name).update(offset_seconds=offset)
    return now.replace(second=offset, microsecond=0)


def _admin_starts(html: str) -> list[str]:
    return re.findall(r'class="ops-start">([^<]+)<', html)


def test_every_surface_shows_the_start_still_due_this_minute(admin_client, api, schedules):
    start = _daily_at_this_minute("cleanup", 59)
    today = at_second(start, now=start)  # "HH:MM:59"; tomorrow's would carry its date

    out = io.StringIO()
    call_command("schedules", "list", "--next", "1", stdout=out)
    line = next(x for x in out.getvalue().splitlines() if x.startswith("cleanup "))
    cli = re.search(r"\d\d \d\d:\d\d:\d\d", line).group(0)

    detail = api.get("/api/schedules/cleanup/").json()
    jobs = api.get("/api/jobs/").json()["results"]
    listed = next(job for job in jobs if job["name"] == "cleanup")

    changelist = reverse("admin:django_celery_beat_periodictask_changelist")
    schedule_list = admin_client.get(changelist, {"q": "cleanup"}).content.decode()
    task = PeriodicTask.objects.get(name="cleanup")
    change_form = admin_client.get(
        reverse("admin:django_celery_beat_periodictask_change", args=[task.pk])
    ).content.decode()
    job_page = admin_client.get(reverse("admin:ops_job", args=["cleanup"])).content.decode()
    dashboard = admin_client.get(reverse("ops-dashboard")).content.decode()
    dashboard_row = re.search(r'data-job="cleanup">(.*?)</tr>', dashboard, re.S).group(1)

    assert timezone.now() < start, "the surfaces answered after the start: the premise is gone"
    assert cli == start.strftime("%d %H:%M:%S")
    assert datetime.fromisoformat(detail["next_runs"][0]) == start
    assert datetime.fromisoformat(listed["next_run"]) == start
    assert datetime.fromisoformat(listed["next_runs"][0]) == start
    assert _admin_starts(schedule_list)[0] == today
    assert f"<li>{start:%a %Y-%m-%d %H:%M:%S} UTC</li>" in change_form  # the edit preview
    assert _admin_starts(job_page)[0] == today
    assert f"<td>{today}</td>" in dashboard_row
    # and the start after it is tomorrow's, everywhere
    tomorrow = start + timedelta(days=1)
    assert datetime.fromisoformat(detail["next_runs"][1]) == tomorrow
    assert _admin_starts(job_page)[1] == at_second(tomorrow, now=start)


def test_a_disabled_schedule_has_no_next_start_on_any_surface(admin_client, api, schedules):
    PeriodicTask.objects.filter(name="settlement").update(enabled=False)

    out = io.StringIO()
    call_command("schedules", "list", stdout=out)
    line = next(x for x in out.getvalue().splitlines() if x.startswith("settlement "))
    assert not re.search(r"\d\d:\d\d:\d\d", line), line

    assert api.get("/api/schedules/settlement/").json()["next_runs"] == []
    listed = next(j for j in api.get("/api/jobs/").json()["results"] if j["name"] == "settlement")
    assert (listed["next_run"], listed["next_runs"]) == (None, [])
    job_page = admin_client.get(reverse("admin:ops_job", args=["settlement"])).content.decode()
    assert _admin_starts(job_page) == []
    changelist = reverse("admin:django_celery_beat_periodictask_changelist")
    schedule_list = admin_client.get(changelist, {"q": "settlement"}).content.decode()
    assert _admin_starts(schedule_list) == []


def test_a_cron_written_around_validation_is_named_not_a_crash(admin_client, api, schedules):
    """A crontab row no parser would accept (written with SQL or the ORM): every surface says so
    or shows no start; none answers 500."""
    bad = crontab_for(Cron("7", "*", "*", "*", "*"))
    CrontabSchedule.objects.filter(pk=bad.pk).update(minute="61")  # no signal, no validation
    PeriodicTask.objects.filter(name="cleanup").update(crontab=bad)

    out = io.StringIO()
    call_command("schedules", "list", stdout=out)
    line = next(x for x in out.getvalue().splitlines() if x.startswith("cleanup "))
    assert "invalid" in line, line

    assert api.get("/api/schedules/cleanup/").json()["next_runs"] == []
    changelist = reverse("admin:django_celery_beat_periodictask_changelist")
    response = admin_client.get(changelist, {"q": "cleanup"})
    assert response.status_code == 200
    assert "minute &#x27;61&#x27; is invalid" in response.content.decode()
    assert admin_client.get(reverse("admin:ops_job", args=["cleanup"])).status_code == 200
