"""The API's lists answer pages: one page costs what a page costs, whatever the table holds."""

from __future__ import annotations

import json

import pytest
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from scheduler.models import JobSchedule
from scheduler.registry import all_jobs

pytestmark = pytest.mark.django_db


@pytest.fixture
def many_schedules(schedules) -> list[str]:
    """The jobs' schedules plus 120 other tasks' schedules; every name, sorted."""
    every_five = CrontabSchedule.objects.create(minute="*/5")
    tasks = PeriodicTask.objects.bulk_create(
        PeriodicTask(name=f"tenant-{i:03d}", task="tenants.sync", crontab=every_five, kwargs="{}")
        for i in range(120)
    )
    JobSchedule.objects.bulk_create(
        JobSchedule(periodic_task=t, offset_seconds=i % 60, tracked_since=timezone.now())
        for i, t in enumerate(tasks)
    )
    return sorted(PeriodicTask.objects.values_list("name", flat=True))


def test_schedules_come_in_pages_that_add_up_to_every_schedule(api, many_schedules):
    first = api.get("/api/schedules/").json()
    assert first["count"] == len(many_schedules)
    assert len(first["results"]) == 50  # the default page
    assert first["previous"] is None
    names = []
    url = "/api/schedules/?limit=40"
    while url:
        page = api.get(url).json()
        names += [s["name"] for s in page["results"]]
        url = page["next"]
    assert names == many_schedules
    tenant = next(s for s in first["results"] if s["name"] == "tenant-000")
    assert (tenant["six_field"], len(tenant["next_runs"])) == ("0 */5 * * * *", 5)


@pytest.mark.parametrize(
    ("query", "field"),
    [("limit=0", "limit"), ("limit=501", "limit"), ("limit=ten", "limit"), ("offset=-1", "offset")],
)
def test_a_page_outside_the_documented_bounds_is_refused_naming_the_parameter(
    api, many_schedules, query, field
):
    response = api.get(f"/api/schedules/?{query}")
    assert response.status_code == 400
    assert field in response.json()


def test_jobs_come_in_pages_too(api, schedules):
    page = api.get("/api/jobs/?limit=5&offset=5").json()
    jobs = [job.name for job in all_jobs()]
    assert page["count"] == len(jobs)
    assert [job["name"] for job in page["results"]] == jobs[5:10]


def test_the_schema_documents_the_page_and_its_parameters(api):
    body = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").content
    schema = json.loads(body)
    for path in ("/api/schedules/", "/api/jobs/"):
        get = schema["paths"][path]["get"]
        parameters = {p["name"]: p["schema"] for p in get["parameters"]}
        assert parameters["limit"] == {
            "type": "integer",
            "minimum": 1,
            "maximum": 500,
            "default": 50,
        }
        assert parameters["offset"]["minimum"] == 0
        ref = get["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        page = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
        assert {"count", "next", "previous", "results"} <= set(page["properties"])
