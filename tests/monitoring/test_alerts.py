"""Alerts without Prometheus: incidents from the ledger, notified once per incident.

Real PostgreSQL; e-mail through Django's locmem backend (the outbox), the webhook to a real HTTP
server on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import connection
from django.utils import timezone

from core.env import ConfigError
from jobsite.settings import alert_settings
from monitoring import alerts, conf
from monitoring.alerts import alerts_deliver, alerts_evaluate
from monitoring.models import AlertDelivery, Incident
from scheduler.models import AuditEvent, JobRun
from tests.ops.conftest import make_run

pytestmark = pytest.mark.django_db

JOB = "live-stats-sync"


class Hook:
    """What a chat tool's incoming webhook received; `status` and `delay` shape its answer."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        self.status = 200
        self.delay = 0.0
        self.url = ""


@pytest.fixture
def webhook() -> Iterator[Hook]:
    hook = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if hook.delay:
                time.sleep(hook.delay)
            hook.bodies.append(body)
            hook.paths.append(self.path)
            self.send_response(hook.status)
            self.end_headers()
            self.wfile.write(b"ok" if hook.status < 400 else b"chat tool is down")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.handle_error = lambda *args: None  # a client that timed out left: nothing to say
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/services/T0/B0/secret-token"
    yield hook
    server.shutdown()
    server.server_close()


@pytest.fixture
def channels(settings, webhook, mailoutbox) -> Hook:
    settings.ALERTS = replace(
        settings.ALERTS,
        emails=("ops@example.com", "oncall@example.com"),
        webhook_url=webhook.url,
        timeout_seconds=1,
    )
    return webhook


@pytest.fixture
def base() -> datetime:
    return (timezone.now() - timedelta(hours=2)).replace(second=45, microsecond=0)


def fail(job: str, slot: datetime, status: str = "failed") -> JobRun:
    return make_run(job, slot, status, error="ValueError: the feed is down\n  more")


def missed(job: str, slot: datetime, status: str = "missed") -> JobRun:
    """A row as the reconciler writes it: nothing started for the slot."""
    return JobRun.objects.create(
        job=job,
        slot=slot,
        status=status,
        trigger="beat",
        finished_at=slot + timedelta(seconds=90),
        error="no run started for this slot",
    )


def evaluate_and_deliver(now: datetime) -> dict[str, int]:
    counts = alerts_evaluate(now=now)
    alerts_deliver(now=now)
    return counts


# ---------------------------------------------------------------------------------------------
# Consecutive failures
# ---------------------------------------------------------------------------------------------


def test_n_failures_in_a_row_notify_once_until_a_success_resolves_the_incident(
    channels, mailoutbox, base
):
    # given two failures: not yet an incident (N = 3 by default)
    for minute in (0, 1):
        fail(JOB, base + timedelta(minutes=minute))
    assert evaluate_and_deliver(base + timedelta(minutes=2))["opened"] == 0
    assert mailoutbox == []
    assert channels.bodies == []

    # when the third one fails
    fail(JOB, base + timedelta(minutes=2), status="lost")
    evaluate_and_deliver(base + timedelta(minutes=3))

    # then one incident, one mail to every recipient, one webhook post
    incident = Incident.objects.get()
    assert (incident.job, incident.kind, incident.is_open) == (JOB, "failures", True)
    assert incident.occurrences == 3
    assert len(mailoutbox) == 1
    assert mailoutbox[0].subject == f"[jobsite] ALERT {JOB} failed 3 times in a row"
    assert mailoutbox[0].to == ["ops@example.com", "oncall@example.com"]
    assert "the feed is down" in mailoutbox[0].body
    assert len(channels.bodies) == 1
    assert channels.bodies[0]["text"].startswith(f"[jobsite] ALERT {JOB} failed 3 times")
    assert channels.bodies[0]["incident"]["kind"] == "failures"
    assert set(incident.deliveries.values_list("channel", "status")) == {
        ("email", "sent"),
        ("webhook", "sent"),
    }
    # the webhook's secret path is never stored
    assert incident.deliveries.get(channel="webhook").target == channels.url.split("/services")[0]

    # when more failures follow in the same incident, then no new notification
    for minute in (3, 4):
        fail(JOB, base + timedelta(minutes=minute))
        evaluate_and_deliver(base + timedelta(minutes=minute + 1))
    incident.refresh_from_db()
    assert incident.occurrences == 5
    assert incident.is_open
    assert len(mailoutbox) == 1
    assert len(channels.bodies) == 1

    # when the job succeeds, then the incident resolves, with one "resolved" notice
    ok = make_run(JOB, base + timedelta(minutes=6))
    assert evaluate_and_deliver(base + timedelta(minutes=7))["resolved"] == 1
    incident.refresh_from_db()
    assert not incident.is_open
    assert incident.resolved_by_run_id == ok.pk
    assert len(mailoutbox) == 2
    assert mailoutbox[1].subject.startswith("[jobsite] RESOLVED")
    assert [b["event"] for b in channels.bodies] == ["opened", "resolved"]

    # evaluating again changes nothing
    assert evaluate_and_deliver(base + timedelta(minutes=8)) == {
        "opened": 0,
        "updated": 0,
        "resolved": 0,
    }
    assert len(mailoutbox) == 2

    # a new streak later opens a new incident and notifies again
    for minute in (10, 11, 12):
        fail(JOB, base + timedelta(minutes=minute))
    evaluate_and_deliver(base + timedelta(minutes=13))
    assert Incident.objects.filter(resolved_at=None).count() == 1
    assert Incident.objects.count() == 2
    assert len(mailoutbox) == 3
    assert len(channels.bodies) == 3


def test_failures_broken_by_successes_never_alert(channels, mailoutbox, base):
    statuses = ["failed", "failed", "succeeded", "failed", "failed", "retrying", "succeeded"]
    for minute, status in enumerate(statuses):
        make_run(JOB, base + timedelta(minutes=minute), status)
        evaluate_and_deliver(base + timedelta(minutes=minute, seconds=30))
    assert not Incident.objects.exists()
    assert mailoutbox == []


def test_a_retried_old_slot_that_succeeds_resolves_the_incident(channels, base):
    failed = [fail(JOB, base + timedelta(minutes=m)) for m in range(3)]
    evaluate_and_deliver(base + timedelta(minutes=3))
    retry_start = base + timedelta(minutes=4)
    make_run(JOB, failed[0].slot, attempt=2, trigger="retry", started_at=retry_start)
    assert evaluate_and_deliver(base + timedelta(minutes=5))["resolved"] == 1
    assert evaluate_and_deliver(base + timedelta(minutes=6))["opened"] == 0


# ---------------------------------------------------------------------------------------------
# Missed runs and lateness
# ---------------------------------------------------------------------------------------------


def test_a_missed_run_alerts_once_and_later_misses_join_the_incident(channels, mailoutbox, base):
    # given the reconciler recorded a slot missed (as during a broker outage)
    missed(JOB, base)
    evaluate_and_deliver(base + timedelta(minutes=3))
    # when more slots go missed or expire during the outage
    missed(JOB, base + timedelta(minutes=1))
    missed(JOB, base + timedelta(minutes=2), "expired")
    evaluate_and_deliver(base + timedelta(minutes=4))

    incident = Incident.objects.get()
    assert incident.kind == "missed"
    assert incident.occurrences == 3
    assert len(mailoutbox) == 1
    assert len(channels.bodies) == 1
    assert f"{JOB} missed its run at {base:%Y-%m-%d %H:%M:%S} UTC" in mailoutbox[0].subject

    # then the first run that succeeds after the alert resolves it
    make_run(JOB, base + timedelta(minutes=5))
    evaluate_and_deliver(base + timedelta(minutes=6))
    assert not Incident.objects.get().is_open
    assert len(mailoutbox) == 2


def test_an_open_incident_keeps_counting_when_retention_prunes_its_first_runs(
    channels, mailoutbox, base
):
    # given an open incident of five failures
    first = []
    for minute in range(5):
        first.append(fail(JOB, base + timedelta(minutes=minute)))
        evaluate_and_deliver(base + timedelta(minutes=minute, seconds=30))
    assert Incident.objects.get().occurrences == 5
    # when retention prunes its two oldest rows (a job failing for longer than the failed-run
    # retention: 24 hours in the test profile) and the job fails once more
    JobRun.objects.filter(pk__in=[first[0].pk, first[1].pk]).delete()
    fail(JOB, base + timedelta(minutes=5))
    evaluate_and_deliver(base + timedelta(minutes=5, seconds=30))

    # then the incident counts six failures, not the four rows left in the ledger
    incident = Incident.objects.get()
    assert (incident.occurrences, incident.first_run_id) == (6, first[0].pk)
    assert len(mailoutbox) == 1


def test_slots_of_an_outage_recorded_missed_after_the_recovery_stay_in_its_incident(
    channels, mailoutbox, base
):
    # given an outage: a missed slot alerted, then the workers are back and a run succeeds
    missed(JOB, base)
    evaluate_and_deliver(base + timedelta(minutes=3))
    make_run(JOB, base + timedelta(minutes=10))
    # when the reconciler records an older slot of the outage missed only after that success
    missed(JOB, base + timedelta(minutes=8))
    evaluate_and_deliver(base + timedelta(minutes=11))
    evaluate_and_deliver(base + timedelta(minutes=12))

    # then it counts in the resolved incident: one outage, one alert, one resolved notice
    incident = Incident.objects.get()
    assert not incident.is_open
    assert incident.occurrences == 2
    assert [b["event"] for b in channels.bodies] == ["opened", "resolved"]

    # and a slot missed after the recovery is a new incident
    missed(JOB, base + timedelta(minutes=20))
    assert evaluate_and_deliver(base + timedelta(minutes=23))["opened"] == 1
    assert len(mailoutbox) == 3


def test_a_new_streak_after_a_success_in_one_gap_resolves_then_opens_anew(channels, base):
    for minute in range(3):
        fail(JOB, base + timedelta(minutes=minute))
    evaluate_and_deliver(base + timedelta(minutes=3))
    # beat was away while the job recovered once and failed three times again
    make_run(JOB, base + timedelta(minutes=6))
    for minute in (7, 8, 9):
        fail(JOB, base + timedelta(minutes=minute))

    assert evaluate_and_deliver(base + timedelta(minutes=10))["resolved"] == 1
    assert evaluate_and_deliver(base + timedelta(minutes=11))["opened"] == 1
    first, second = Incident.objects.order_by("id")
    assert first.occurrences == 3
    assert second.occurrences == 3
    assert second.is_open
    assert [b["event"] for b in channels.bodies] == ["opened", "resolved", "opened"]


def test_lateness_over_the_threshold_alerts_once(settings, channels, mailoutbox, base):
    settings.ALERTS = replace(settings.ALERTS, lateness_seconds=30)
    # on time, a retry that is late by design, and a late catch-up: no alert
    make_run(JOB, base, started_at=base + timedelta(seconds=29))
    make_run(JOB, base, attempt=2, started_at=base + timedelta(seconds=200))
    catch_up_start = base + timedelta(minutes=3)
    make_run(JOB, base + timedelta(minutes=1), trigger="reconciler", started_at=catch_up_start)
    evaluate_and_deliver(base + timedelta(minutes=4))
    assert not Incident.objects.exists()

    # two beat runs that started 31 s and 40 s late: one alert
    make_run(JOB, base + timedelta(minutes=5), started_at=base + timedelta(minutes=5, seconds=31))
    evaluate_and_deliver(base + timedelta(minutes=6))
    make_run(JOB, base + timedelta(minutes=6), started_at=base + timedelta(minutes=6, seconds=40))
    evaluate_and_deliver(base + timedelta(minutes=7))

    incident = Incident.objects.get()
    assert incident.kind == "late"
    assert incident.occurrences == 2
    assert incident.is_open
    assert re.search(r"started 31 s late .*threshold 30 s", mailoutbox[0].subject)
    assert len(mailoutbox) == 1
    assert len(channels.bodies) == 1

    # a succeeded run that is still late does not resolve it; one on time does
    make_run(JOB, base + timedelta(minutes=8), started_at=base + timedelta(minutes=8, seconds=45))
    evaluate_and_deliver(base + timedelta(minutes=9))
    assert Incident.objects.get().is_open
    assert len(mailoutbox) == 1
    make_run(JOB, base + timedelta(minutes=9), started_at=base + timedelta(minutes=9, seconds=5))
    evaluate_and_deliver(base + timedelta(minutes=10))
    assert not Incident.objects.get().is_open
    assert len(mailoutbox) == 2


def test_without_channels_incidents_are_still_recorded(mailoutbox, base):
    for minute in range(3):
        fail(JOB, base + timedelta(minutes=minute))
    evaluate_and_deliver(base + timedelta(minutes=3))
    assert Incident.objects.get().deliveries.count() == 0
    assert mailoutbox == []


# ---------------------------------------------------------------------------------------------
# Concurrency: two beats evaluating and delivering at once
# ---------------------------------------------------------------------------------------------


def _in_threads(target, count: int = 2) -> list[BaseException]:
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait(timeout=10)
            target()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return errors


@pytest.mark.django_db(transaction=True)
def test_two_evaluations_racing_notify_once(channels, mailoutbox, base):
    jobs = [f"race-{n}" for n in range(5)]
    for job in jobs:
        for minute in range(3):
            fail(job, base + timedelta(minutes=minute))
    now = base + timedelta(minutes=3)

    assert _in_threads(lambda: alerts_evaluate(now=now)) == []
    assert _in_threads(lambda: alerts_deliver(now=now)) == []

    assert Incident.objects.count() == len(jobs)
    assert AlertDelivery.objects.filter(status="sent").count() == 2 * len(jobs)
    assert len(mailoutbox) == len(jobs)
    assert sorted(b["incident"]["job"] for b in channels.bodies) == jobs


def test_an_incident_opened_by_another_evaluation_first_is_not_opened_again(channels, base):
    # given a second beat that found the same streak and opened it a moment earlier
    for minute in range(3):
        fail(JOB, base + timedelta(minutes=minute))
    settings = conf.load()
    finding = alerts._find(JOB, "failures", after_id=0, since=base, config=settings)
    now = base + timedelta(minutes=3)
    assert alerts._incident_open(JOB, "failures", finding, now, settings)
    # when this one tries too, the constraint refuses it: no second incident, no second notice
    assert not alerts._incident_open(JOB, "failures", finding, now, settings)
    assert Incident.objects.count() == 1
    assert AlertDelivery.objects.count() == 2


# ---------------------------------------------------------------------------------------------
# Failing channels never reach beat
# ---------------------------------------------------------------------------------------------


def test_a_webhook_answering_500_is_a_recorded_failure_retried_later(channels, mailoutbox, base):
    channels.status = 500
    for minute in range(3):
        fail(JOB, base + timedelta(minutes=minute))
    now = base + timedelta(minutes=3)
    alerts_evaluate(now=now)
    assert alerts_deliver(now=now) == {"sent": 1, "failed": 1}

    hook = AlertDelivery.objects.get(channel="webhook")
    assert hook.status == "failed"
    assert hook.attempts == 1
    assert "HTTP 500: chat tool is down" in hook.error
    assert len(mailoutbox) == 1  # the e-mail went anyway

    # not retried at once; after RETRY_AFTER, and then it goes through
    assert alerts_deliver(now=timezone.now()) == {"sent": 0, "failed": 0}
    channels.status = 200
    assert alerts_deliver(now=timezone.now() + alerts.RETRY_AFTER * 2) == {"sent": 1, "failed": 0}
    hook.refresh_from_db()
    assert (hook.status, hook.attempts, hook.error) == ("sent", 2, "")
    assert len(mailoutbox) == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_webhook_that_is_down_is_a_recorded_failure(settings, channels, base):
    down = f"http://127.0.0.1:{_closed_port()}/hook"
    settings.ALERTS = replace(settings.ALERTS, webhook_url=down)
    for minute in range(3):
        fail(JOB, base + timedelta(minutes=minute))
    evaluate_and_deliver(base + timedelta(minutes=3))
    hook = AlertDelivery.objects.get(channel="webhook")
    assert hook.status == "failed"
    assert "unreachable" in hook.error
    # after MAX_ATTEMPTS it is left failed
    for attempt in range(alerts.MAX_ATTEMPTS + 1):
        alerts_deliver(now=timezone.now() + alerts.RETRY_AFTER * 2 * (attempt + 1))
    hook.refresh_from_db()
    assert (hook.status, hook.attempts) == ("failed", alerts.MAX_ATTEMPTS)


@pytest.mark.django_db(transaction=True)
def test_a_webhook_that_hangs_holds_a_watchdog_pass_only_for_its_budget(channels, mailoutbox, base):
    from monitoring.watchdog import watchdog_pass
    from scheduler.heartbeat import beat_heartbeat_stamp

    # given a live beat, a chat tool that answers after 5 s, a 1 s timeout, and two jobs failing
    # three times
    beat_heartbeat_stamp(force=True)
    channels.delay = 5
    for job in (JOB, "cleanup"):
        for minute in range(3):
            fail(job, base + timedelta(minutes=minute))

    # when the watchdog runs a pass with a 0.5 s delivery budget
    report = watchdog_pass(delivery_budget=0.5)

    # then the pass opened both incidents, sent the first mail, gave up on the first webhook
    # after its timeout and left the second incident's notifications for the next pass
    assert report.steps["alerts"]["opened"] == 2
    assert report.seconds < 3.0, report.seconds
    rows = AlertDelivery.objects.order_by("id").values_list("channel", "status")
    assert list(rows) == [
        ("email", "sent"),
        ("webhook", "failed"),
        ("email", "pending"),
        ("webhook", "pending"),
    ]
    # and the next pass sends what was left
    channels.delay = 0
    watchdog_pass()
    assert AlertDelivery.objects.filter(status="sent").count() == 3
    assert len(mailoutbox) == 2


def test_an_evaluation_error_in_the_watchdog_is_logged_not_raised(monkeypatch, caplog):
    # (a bad setting cannot get this far any more: settings refuse it when the process starts)
    from monitoring.watchdog import watchdog_pass

    def broken(**_: object) -> None:
        raise RuntimeError("ledger unreadable")

    monkeypatch.setattr(alerts, "alerts_evaluate", broken)
    report = watchdog_pass()  # what `manage.py watchdog` does every 30 s
    assert "ledger unreadable" in caplog.text
    assert report.steps["alerts"] is None
    assert report.steps["reconciler"] is not None  # the other steps still ran


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


def test_defaults():
    settings = conf.load()
    assert (settings.failures, settings.lateness_seconds, settings.timeout_seconds) == (3, 60, 5)
    assert settings.channels == []


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("JOBSITE_ALERT_FAILURES", "three", "JOBSITE_ALERT_FAILURES='three' is not a whole number"),
        ("JOBSITE_ALERT_FAILURES", "0", "JOBSITE_ALERT_FAILURES=0 is outside"),
        ("JOBSITE_ALERT_LATENESS_SECONDS", "-5", "JOBSITE_ALERT_LATENESS_SECONDS=-5 is outside"),
        ("JOBSITE_ALERT_LATENESS_SECONDS", "1.5", "JOBSITE_ALERT_LATENESS_SECONDS='1.5' is not"),
        ("JOBSITE_ALERT_TIMEOUT_SECONDS", "600", "JOBSITE_ALERT_TIMEOUT_SECONDS=600 is outside"),
        ("JOBSITE_ALERT_EMAILS", "ops@example.com,oncall", "JOBSITE_ALERT_EMAILS: 'oncall' is not"),
        ("JOBSITE_ALERT_WEBHOOK_URL", "ftp://chat.example.com/x", "JOBSITE_ALERT_WEBHOOK_URL has"),
        ("JOBSITE_ALERT_WEBHOOK_URL", "chat.example.com/hook", "JOBSITE_ALERT_WEBHOOK_URL has"),
        ("JOBSITE_ALERT_WEBHOOK_URL", "https:///hook", "JOBSITE_ALERT_WEBHOOK_URL names no host"),
        ("JOBSITE_ALERT_WEBHOOK_URL", "https://chat:x/", "JOBSITE_ALERT_WEBHOOK_URL is not a"),
    ],
)
def test_a_bad_alert_setting_names_its_variable(monkeypatch, name, value, message):
    # read once at start: the process stops (tests/test_foundation.py runs manage.py with one)
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=re.escape(message)):
        alert_settings()


def test_a_file_url_is_refused_as_a_webhook(monkeypatch):
    monkeypatch.setenv("JOBSITE_ALERT_WEBHOOK_URL", "file:///etc/passwd")
    with pytest.raises(ConfigError, match="JOBSITE_ALERT_WEBHOOK_URL has scheme 'file'"):
        alert_settings()


def test_channels_from_the_environment(monkeypatch):
    monkeypatch.setenv("JOBSITE_ALERT_EMAILS", "a@example.com, b@example.com")
    monkeypatch.setenv("JOBSITE_ALERT_WEBHOOK_URL", "https://hooks.example.com/T/B/secret")
    settings = alert_settings()
    assert settings.emails == ("a@example.com", "b@example.com")
    assert settings.channels == ["email", "webhook"]
    assert settings.webhook_target == "https://hooks.example.com"


# ---------------------------------------------------------------------------------------------
# Where operators see incidents: above a job's runs, on its schedule, the dashboard, /metrics
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def open_incident(schedules, base) -> Incident:
    for minute in range(3):
        fail(JOB, base + timedelta(minutes=minute))
    missed("cleanup", base)
    alerts_evaluate(now=base + timedelta(minutes=3))
    return Incident.objects.get(job=JOB)


def test_the_ledger_filtered_by_job_shows_its_open_incidents_above_the_runs(
    admin_client, open_incident
):
    page = admin_client.get("/admin/scheduler/jobrun/", {"job": JOB}).content.decode()
    box = page[page.index('id="ops-open-incidents"') : page.index('id="changelist"')]
    assert f"Open incidents of {JOB}" in box
    assert f"{JOB} failed 3 times in a row" in box
    assert "cleanup" not in box  # another job's incident is not in this job's view
    assert "no channel configured" in box

    everything = admin_client.get("/admin/scheduler/jobrun/").content.decode()
    assert "cleanup missed its run" in everything


def test_the_schedule_page_and_the_dashboard_show_open_incidents(
    admin_client, schedules, open_incident
):
    task = schedules[JOB]
    page = admin_client.get(f"/admin/django_celery_beat/periodictask/{task.pk}/change/")
    assert f"{JOB} failed 3 times in a row" in page.content.decode()
    dashboard = admin_client.get("/admin/jobs-dashboard/").content.decode()
    assert 'id="ops-open-incidents"' in dashboard
    assert "cleanup missed its run" in dashboard


def test_the_incident_admin_filters_open_incidents_by_job_and_kind(admin_client, open_incident):
    alerts_evaluate(now=timezone.now())  # nothing new
    page = admin_client.get(
        "/admin/monitoring/incident/", {"job": JOB, "kind": "failures", "state": "open"}
    ).content.decode()
    assert f"{JOB} failed 3 times in a row" in page
    assert "cleanup missed" not in page
    detail = admin_client.get(f"/admin/monitoring/incident/{open_incident.pk}/change/")
    detail = detail.content.decode()
    assert f"#{open_incident.first_run_id}</a>" in detail


def test_metrics_count_open_incidents(api, open_incident):
    text = api.get("/metrics", HTTP_ACCEPT="text/plain").content.decode()
    assert f'jobsite_job_open_incidents{{job_name="{JOB}",kind="failures"}} 1.0' in text
    assert 'jobsite_job_open_incidents{job_name="cleanup",kind="missed"} 1.0' in text
    # Nothing open is a 0, not an absent series.
    assert f'jobsite_job_open_incidents{{job_name="{JOB}",kind="missed"}} 0.0' in text
    assert 'jobsite_job_open_incidents{job_name="settlement",kind="late"} 0.0' in text


# ---------------------------------------------------------------------------------------------
# In a real watchdog process: no beat work, no worker, only the ledger and one watchdog pass
# ---------------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_real_watchdog_alerts_a_missed_run_by_webhook_and_mail(tmp_path, webhook, base):
    from scheduler.heartbeat import beat_heartbeat_stamp
    from tests.scheduler.conftest import close_other_connections
    from tests.scheduler.processes import manage_process

    # given the ledger of a platform whose workers are all dead: a slot recorded missed (and a
    # beat that is alive, so that the only problem is the job's)
    missed(JOB, base)
    beat_heartbeat_stamp(force=True)
    # when the watchdog runs one pass (reconciler, alert evaluation, delivery)
    with manage_process(
        ["watchdog", "--once"],
        tmp_path / "watchdog.log",
        JOBSITE_ALERT_WEBHOOK_URL=webhook.url,
        JOBSITE_ALERT_EMAILS="ops@example.com",
        EMAIL_BACKEND="django.core.mail.backends.console.EmailBackend",
    ) as process:
        assert process.wait(60) == 0
    close_other_connections()

    # then the chat tool and the mailbox were told once, and the ledger's job view has it
    log = (tmp_path / "watchdog.log").read_text()
    assert [b["incident"]["kind"] for b in webhook.bodies] == ["missed"], log[-3000:]
    assert webhook.paths == ["/services/T0/B0/secret-token"]
    assert f"Subject: [jobsite] ALERT {JOB} missed its run" in log
    assert "watchdog pass: alerts opened 1; deliveries sent 2" in log
    incident = Incident.objects.get()
    assert incident.is_open
    assert set(incident.deliveries.values_list("channel", "status")) == {
        ("email", "sent"),
        ("webhook", "sent"),
    }


def test_an_operator_closes_an_incident_by_hand_with_a_notice_and_an_audit_row(
    admin_client, channels, mailoutbox, base
):
    # given an open incident of a job that will not run again
    for minute in range(3):
        fail(JOB, base + timedelta(minutes=minute))
    evaluate_and_deliver(base + timedelta(minutes=3))
    incident = Incident.objects.get()

    # when an operator closes it in the admin
    response = admin_client.post(
        "/admin/monitoring/incident/",
        {"action": "close_incidents", "_selected_action": [incident.pk]},
    )
    assert response.status_code == 302
    alerts_deliver()

    # then it is resolved, the channels hear it, the audit trail says who
    incident.refresh_from_db()
    assert not incident.is_open
    assert incident.resolution.startswith("closed by hand: admin by admin")
    assert mailoutbox[-1].subject.startswith("[jobsite] RESOLVED")
    assert [b["event"] for b in channels.bodies] == ["opened", "resolved"]
    assert AuditEvent.objects.get(action="incident.close").object_repr == f"{JOB} failures"
    # and one more failure does not reopen it: a new incident needs N newer failures
    fail(JOB, base + timedelta(minutes=4))
    assert alerts_evaluate(now=base + timedelta(minutes=5))["opened"] == 0


def test_a_job_error_line_reaches_chat_as_literal_text(channels, mailoutbox, base):
    # given three failures whose error line carries chat markup and a room mention
    for minute in (0, 1, 2):
        make_run(
            JOB, base + timedelta(minutes=minute), "failed", error="<!channel> <@U123> & @here"
        )

    evaluate_and_deliver(base + timedelta(minutes=3))

    # then the webhook text is escaped for Slack and the mention disarmed; mail stays plain
    text = channels.bodies[0]["text"]
    assert "&lt;!channel&gt; &lt;@U123&gt; &amp; @\u200bhere" in text
    assert "<" not in text
    assert "<!channel> <@U123> & @here" in mailoutbox[0].body
