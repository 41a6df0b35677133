"""The admin flows in a real browser: Playwright for Python driving Debian's Chromium.

Enable: `apt-get install -y chromium` (so /usr/bin/chromium exists; .ci/run does it). Never
`playwright install`: it downloads browsers, which this project's machines cannot. Run only these
with `pytest -m browser`. The dashboard screenshots in docs/ come from here
(`JOBSITE_SCREENSHOTS=1` rewrites them).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django_celery_beat.models import PeriodicTask

from scheduler.audit import Actor
from scheduler.models import JobRun
from scheduler.registry import all_jobs
from scheduler.services.writes import schedules_apply
from tests.ops.conftest import make_run
from tests.scheduler.processes import celery_process, worker_args

CHROMIUM = Path("/usr/bin/chromium")
DOCS = Path(__file__).resolve().parents[2] / "docs"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

if not CHROMIUM.exists():
    pytest.skip(
        "browser tests need Debian's Chromium at /usr/bin/chromium: run "
        "`apt-get install -y chromium` (never `playwright install`), then `pytest -m browser`",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is missing: run `uv sync`"
)


@pytest.fixture
def browser(monkeypatch) -> Iterator[object]:
    # Playwright's sync API runs an event loop in this thread; the ORM calls the test makes
    # around it are still synchronous and safe.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser, live_server, admin_user):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(15_000)
    # Chromium reports every Content-Security-Policy refusal on the console.
    refused: list[str] = []
    page.on("console", lambda m: refused.append(m.text) if "Security Policy" in m.text else None)
    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")
    yield page
    context.close()
    assert refused == []  # every page of the flow worked under the CSP


def wait_for_run(pk: int, timeout: float = 90) -> JobRun:
    """The run once it has ended (the worker is a separate process, its own transactions)."""
    deadline = time.monotonic() + timeout
    while True:
        run = JobRun.objects.get(pk=pk)
        if run.status not in ("queued", "running") or time.monotonic() > deadline:
            return run
        time.sleep(0.5)


def an_hour_of_runs() -> None:
    """Every job at its own offset for the last hour, with plausible durations."""
    rng = random.Random(7)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    for minute in range(60, 0, -1):
        boundary = now - timedelta(minutes=minute)
        for job in all_jobs():
            if job.name.startswith("sample-"):
                continue
            slot = boundary + timedelta(seconds=job.offset)
            status = "failed" if rng.random() < 0.02 else "succeeded"
            make_run(
                job.name,
                slot,
                status,
                started_at=slot + timedelta(milliseconds=rng.randint(3, 60)),
                duration_ms=rng.randint(40, 9000 if job.queue == "long" else 1500),
            )


@pytest.fixture
def worker(transactional_db, tmp_path) -> Iterator[object]:
    """A real `celery worker` process; stopped before the test's tables are flushed."""
    with celery_process(worker_args(tmp_path), tmp_path / "worker.log") as process:
        yield process


def test_an_operator_disables_reoffsets_runs_and_reads_the_dashboard(
    page, live_server, worker, tmp_path
):
    schedules_apply(actor=Actor.system("tests"), profile="test")
    an_hour_of_runs()
    base = live_server.url

    # Disable a job with the bulk action.
    page.goto(f"{base}/admin/django_celery_beat/periodictask/")
    row = page.locator("#result_list tr", has_text="cleanup")
    row.locator("input.action-select").check()
    page.select_option("select[name=action]", "disable_tasks")
    page.click("button[name=index]")
    page.wait_for_selector("text=1 schedule(s) disabled.")

    # A bad offset is refused with its message; a good one is saved.
    page.click("#result_list a:text-is('cleanup')")
    page.fill("#id_job_schedule-0-offset_seconds", "60")
    page.click("input[name=_continue]")
    page.wait_for_selector("text=between 0 and 59")
    page.fill("#id_job_schedule-0-offset_seconds", "36")
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")
    assert page.input_value("#id_job_schedule-0-offset_seconds") == "36"
    assert not page.is_checked("#id_enabled")
    # django-celery-beat's crontab help runs from a file under the CSP: it follows the choice.
    page.select_option("#id_crontab", index=1)
    assert "Translation:" in page.inner_text(".field-crontab .help")

    # Run it now: the run path writes the ledger row (queued) and sends the message on commit;
    # the worker runs it, and the ledger shows the row with its outcome.
    page.click("#ops-run-now")
    page.wait_for_selector("text=cleanup: run")
    run = JobRun.objects.get(job="cleanup", trigger="admin")
    page.wait_for_selector(f"#result_list a:text-is('{run.pk}')")
    assert wait_for_run(run.pk).status == "succeeded", (tmp_path / "worker.log").read_text()
    page.reload()
    row = page.locator("#result_list tr", has=page.locator(f"a:text-is('{run.pk}')"))
    assert row.locator(".ops-status").inner_text().strip() == "succeeded"
    assert "admin" in row.inner_text()  # trigger and user

    # The dashboard draws its charts.
    page.click("text=Jobs dashboard")
    page.wait_for_selector("svg[data-chart=starts-per-second]")
    assert page.locator("svg[data-chart=starts-per-second] rect.bar").count() == 60
    assert page.locator("svg[data-chart=concurrency] path.area").count() == 1
    assert page.locator("svg[data-chart=forecast] rect.bar").count() == 24
    heights = page.eval_on_selector_all(
        "svg[data-chart=starts-per-second] rect.bar", "bars => bars.map(b => b.getBBox().height)"
    )
    assert sum(1 for h in heights if h > 0) >= 12  # twelve jobs, twelve seconds

    # The dashboard links each job to its page: the outcome strip and both trends drew.
    page.click("#ops-job-table a.ops-job-link:text-is('prediction-matcher')")
    page.wait_for_selector("#ops-strip")
    assert page.locator("#ops-strip a.ops-cell").count() == 50
    assert page.locator("#ops-strip a.ops-cell[data-status]").first.get_attribute("title")
    widths = page.eval_on_selector_all(
        "#ops-strip a.ops-cell", "cells => cells.map(c => c.getBoundingClientRect().width)"
    )
    assert all(w > 0 for w in widths)
    for chart in ("job-duration", "job-lateness"):
        heights = page.eval_on_selector_all(
            f"svg[data-chart={chart}] rect.bar", "bars => bars.map(b => b.getBBox().height)"
        )
        assert len(heights) == 50
        assert any(h > 0 for h in heights), chart
    assert "every minute at second 25" in page.inner_text("#ops-job-schedule")
    assert "ago" in page.inner_text("#ops-job-last")

    # Disable with a note: the page says who and why, and so does the audit trail.
    page.fill("#ops-note", "feed provider maintenance until 10:00")
    page.click("#ops-switch")
    page.wait_for_selector("#ops-job-enabled[data-enabled=no]")
    assert "feed provider maintenance until 10:00" in page.inner_text("#ops-job-switched")
    assert "by admin" in page.inner_text("#ops-job-switched")

    # No page the operator works in overflows a 1280 px window.
    page.set_viewport_size({"width": 1280, "height": 1000})
    cleanup = JobRun.objects.filter(job="cleanup").values_list("pk", flat=True).first()
    schedule = PeriodicTask.objects.get(name="cleanup").pk
    for url in (
        "/admin/django_celery_beat/periodictask/",
        f"/admin/django_celery_beat/periodictask/{schedule}/change/",
        "/admin/scheduler/jobrun/",
        f"/admin/scheduler/jobrun/{cleanup}/change/",
        "/admin/jobs-dashboard/",
        "/admin/django_celery_beat/periodictask/job/prediction-matcher/",
    ):
        page.goto(f"{base}{url}")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 1280, f"{url} is {width} px wide at 1280"
        # Nor does a table scroll sideways inside its box (the admin's `.results` would).
        hidden = page.evaluate(
            "[...document.querySelectorAll('#content .results, #content table')]"
            ".map(e => [e.id || e.className || e.tagName, e.scrollWidth - e.clientWidth])"
            ".filter(([, extra]) => extra > 1)"
        )
        assert not hidden, f"{url}: {hidden} scroll sideways at 1280"

    if os.environ.get("JOBSITE_SCREENSHOTS") or not (DOCS / "dashboard.png").exists():
        DOCS.mkdir(exist_ok=True)
        page.goto(f"{base}/admin/jobs-dashboard/?window=1h")
        page.screenshot(path=str(DOCS / "dashboard.png"), full_page=True)
        page.goto(f"{base}/admin/django_celery_beat/periodictask/")
        page.set_viewport_size({"width": 1280, "height": 1000})
        page.screenshot(path=str(DOCS / "admin-schedules.png"), full_page=True)
    if os.environ.get("JOBSITE_SCREENSHOTS") or not (DOCS / "admin-job-page.png").exists():
        page.goto(f"{base}/admin/django_celery_beat/periodictask/job/prediction-matcher/")
        page.screenshot(path=str(DOCS / "admin-job-page.png"), full_page=True)
