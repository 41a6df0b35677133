"""Health endpoints from beat's heartbeat, and /metrics."""

from __future__ import annotations

import os
import re
import socket
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from monitoring.liveness import beat_liveness, watchdog_liveness
from scheduler.heartbeat import beat_heartbeat_stamp
from scheduler.models import JobRun, ProcessHeartbeat
from scheduler.registry import all_jobs
from tests.ops.conftest import make_run
from tests.scheduler.conftest import close_other_connections
from tests.scheduler.processes import beat_args, celery_process

pytestmark = pytest.mark.django_db

WORDS = {"ok", "stale", "down", "unavailable"}


def beat_seen(
    seconds_ago: float, *, hostname: str = "beat-host", pid: int = 4242, kind: str = "beat"
) -> None:
    """A heartbeat row as beat's (or the watchdog's) stamp leaves it, `seconds_ago` old by the
    database's clock."""
    moment = timezone.now() - timedelta(seconds=seconds_ago)
    ProcessHeartbeat.objects.update_or_create(
        kind=kind,
        hostname=hostname,
        pid=pid,
        defaults={"started_at": moment - timedelta(hours=1), "last_tick_at": moment},
    )


def watchdog_seen(seconds_ago: float, **where: object) -> None:
    beat_seen(seconds_ago, kind="watchdog", **where)


def words_only(body: object) -> bool:
    if isinstance(body, dict):
        return all(words_only(value) for value in body.values())
    return body in WORDS


def test_beat_is_down_when_no_beat_ever_stamped():
    liveness = beat_liveness()
    assert (liveness.state, liveness.healthy) == ("down", False)


@pytest.mark.parametrize(
    ("seconds_ago", "state"), [(2, "ok"), (15, "ok"), (30, "stale"), (55, "stale"), (70, "down")]
)
def test_beat_state_follows_the_age_of_its_newest_heartbeat(seconds_ago, state):
    beat_seen(seconds_ago)
    beat_seen(3600, hostname="old-host")  # a beat that died an hour ago does not matter
    liveness = beat_liveness()
    assert liveness.state == state
    assert liveness.hostname == "beat-host"
    assert abs(liveness.age.total_seconds() - seconds_ago) < 2


def test_the_beat_check_answers_words_200_while_alive_and_503_when_down(client):
    beat_seen(3)
    response = client.get("/healthz/beat")
    assert (response.status_code, response.json()) == (
        200,
        {"status": "ok", "checks": {"beat": "ok"}},
    )
    assert "no-cache" in response["Cache-Control"]

    beat_seen(40)
    response = client.get("/healthz/beat")
    assert (response.status_code, response.json()["checks"]) == (200, {"beat": "stale"})

    beat_seen(61)
    response = client.get("/healthz/beat")
    assert (response.status_code, response.json()) == (
        503,
        {"status": "unavailable", "checks": {"beat": "down"}},
    )


@pytest.mark.parametrize(
    ("seconds_ago", "state", "code"),
    [(None, "down", 503), (5, "ok", 200), (50, "ok", 200), (60, "stale", 200), (130, "down", 503)],
)
def test_the_watchdog_is_judged_by_its_own_heartbeat_not_beat_s(client, seconds_ago, state, code):
    # given beat alive (its heartbeat says nothing of the watchdog's) and the watchdog's last pass
    beat_seen(1)
    if seconds_ago is not None:
        watchdog_seen(seconds_ago)
    # then /healthz/watchdog says the watchdog's state, and the load balancer's check stays up
    liveness = watchdog_liveness()
    assert (liveness.kind, liveness.state) == ("watchdog", state)
    response = client.get("/healthz/watchdog")
    assert (response.status_code, response.json()) == (
        code,
        {"status": "ok" if code == 200 else "unavailable", "checks": {"watchdog": state}},
    )
    assert client.get("/healthz").json()["checks"]["watchdog"] == state
    assert client.get("/healthz").status_code == 200
    assert beat_liveness().state == "ok"


def test_a_watchdog_pass_stamps_the_watchdog_s_heartbeat_and_not_beat_s(client):
    from monitoring.watchdog import watchdog_pass

    assert client.get("/healthz/watchdog").status_code == 503
    watchdog_pass()
    row = ProcessHeartbeat.objects.get()
    assert (row.kind, row.hostname, row.pid) == ("watchdog", socket.gethostname(), os.getpid())
    assert client.get("/healthz/watchdog").status_code == 200
    assert beat_liveness().state == "down"


def test_staff_see_the_watchdog_s_state_in_the_header_and_on_the_dashboard(admin_client):
    watchdog_seen(600, hostname="wd-host", pid=33)
    html = admin_client.get("/admin/").content.decode()
    assert 'id="watchdog-state" data-state="down"' in html
    assert "watchdog down, last seen 600 s ago" in html
    page = admin_client.get(reverse("ops-dashboard")).content.decode()
    assert 'id="ops-watchdog" data-state="down"' in page
    assert "wd-host" in page

    watchdog_seen(2, hostname="wd-host", pid=33)
    html = admin_client.get("/admin/").content.decode()
    assert 'id="watchdog-state" data-state="ok"' in html
    assert "watchdog up, last seen 2 s ago" in html


def test_metrics_report_the_watchdog_up_from_its_heartbeat(api):
    beat_seen(2)
    assert "jobsite_watchdog_up 0.0" in api.get("/metrics").content.decode()
    watchdog_seen(3)
    text = api.get("/metrics").content.decode()
    assert "jobsite_watchdog_up 1.0" in text
    assert "jobsite_watchdog_last_seen_timestamp_seconds " in text
    watchdog_seen(300)
    assert "jobsite_watchdog_up 0.0" in api.get("/metrics").content.decode()


@pytest.mark.parametrize(
    "url", ["/healthz", "/healthz/ready", "/healthz/beat", "/healthz/watchdog"]
)
def test_anonymous_callers_get_status_words_not_times_or_hosts(client, url):
    beat_seen(3600, hostname="secret-host")
    watchdog_seen(3600, hostname="secret-host")
    response = client.get(url)
    assert words_only(response.json()), response.json()
    assert b"secret-host" not in response.content


def test_the_load_balancer_check_stays_200_when_beat_is_down(client, settings):
    beat_seen(3600)
    ready = client.get("/healthz/ready")
    assert (ready.status_code, ready.json()["checks"]) == (200, {"database": "ok", "broker": "ok"})
    legacy = client.get("/healthz")
    assert legacy.status_code == 200
    assert legacy.json()["checks"] == {
        "database": "ok",
        "broker": "ok",
        "beat": "down",
        "watchdog": "down",  # reported, never required: a dead watchdog keeps the web up
    }

    settings.HEALTH_BEAT_REQUIRED = True  # opt back in to failing /healthz for beat
    assert client.get("/healthz").status_code == 503
    beat_seen(1)
    assert client.get("/healthz").status_code == 200


def test_a_stamp_is_one_row_per_process_and_at_most_every_few_seconds():
    assert beat_heartbeat_stamp(force=True)
    first = ProcessHeartbeat.objects.get()
    assert not beat_heartbeat_stamp()  # just stamped: nothing written
    assert beat_heartbeat_stamp(force=True)
    again = ProcessHeartbeat.objects.get()
    assert (again.hostname, again.pid) == (socket.gethostname(), os.getpid())
    assert again.started_at == first.started_at
    assert again.last_tick_at >= first.last_tick_at
    assert beat_liveness().state == "ok"


def test_a_beat_starting_forgets_beats_gone_for_a_week(monkeypatch):
    beat_seen(8 * 24 * 3600, hostname="retired-host")
    beat_seen(3600, hostname="yesterday-host")
    monkeypatch.setattr("scheduler.heartbeat._State.started_at", {})  # a new beat process
    assert beat_heartbeat_stamp(force=True)
    hosts = set(ProcessHeartbeat.objects.values_list("hostname", flat=True))
    assert hosts == {"yesterday-host", socket.gethostname()}


def test_staff_see_beat_processes_with_their_last_tick_on_the_dashboard(admin_client):
    beat_seen(4, hostname="beat-a", pid=11)
    beat_seen(600, hostname="beat-b", pid=22)
    page = admin_client.get(reverse("ops-dashboard")).content.decode()
    assert 'data-state="ok"' in page
    assert re.search(r"ok: last tick [4-9] s ago \(beat-a pid 11\)", page)
    # An older beat of the last day stays listed, marked down.
    assert re.search(r"<td>beat-b</td><td>22</td>.*?<td>down</td>", page)


def test_metrics_need_a_staff_token(client, schedules):
    assert client.get("/metrics").status_code == 401


def scrape(api) -> dict[str, list]:
    """/metrics parsed: family name -> its samples."""
    text = api.get("/metrics", HTTP_ACCEPT="text/plain").content.decode()
    return {
        family.name: family.samples
        for family in text_string_to_metric_families(text)  # raises on malformed text
    }


def value(samples: list, name: str, **labels: str) -> float:
    [found] = [s.value for s in samples if s.name == name and s.labels == labels]
    return found


def test_metrics_report_runs_durations_lateness_success_and_queues(api, runs):
    families = scrape(api)
    runs_total = families["jobsite_job_runs"]
    total = "jobsite_job_runs_total"
    assert value(runs_total, total, job_name="referral-tier3", status="succeeded") == 60
    assert value(runs_total, total, job_name="referral-tier2", status="duplicate") == 1
    assert value(runs_total, total, job_name="settlement", status="skipped_lock") == 1
    assert value(runs_total, total, job_name="live-stats-sync", status="failed") == 1
    # Every job has every finished status, 0 included; never queued or running.
    finished = set(JobRun.Status.values) - {"queued", "running"}
    assert {(s.labels["job_name"], s.labels["status"]) for s in runs_total} == {
        (job.name, status) for job in all_jobs() for status in finished
    }

    # Histograms: 60 runs of 150 ms and 20 ms late each.
    duration = families["jobsite_job_duration_seconds"]
    bucket = "jobsite_job_duration_seconds_bucket"
    assert value(duration, bucket, job_name="referral-tier3", le="0.1") == 0
    assert value(duration, bucket, job_name="referral-tier3", le="0.25") == 60
    assert value(duration, bucket, job_name="referral-tier3", le="+Inf") == 60
    assert value(duration, "jobsite_job_duration_seconds_count", job_name="referral-tier3") == 60
    assert value(duration, "jobsite_job_duration_seconds_sum", job_name="referral-tier3") == 9
    lateness = families["jobsite_job_lateness_seconds"]
    bucket = "jobsite_job_lateness_seconds_bucket"
    assert value(lateness, bucket, job_name="referral-tier3", le="0.01") == 0
    assert value(lateness, bucket, job_name="referral-tier3", le="0.025") == 60
    assert value(lateness, bucket, job_name="cleanup", le="+Inf") == 0  # never ran: zeros

    newest = max(r.finished_at for r in runs if r.job == "referral-tier2" and r.finished_at)
    success = families["jobsite_job_last_success_timestamp_seconds"]
    assert value(
        success, "jobsite_job_last_success_timestamp_seconds", job_name="referral-tier2"
    ) == pytest.approx(newest.timestamp())
    assert value(families["jobsite_job_enabled"], "jobsite_job_enabled", job_name="cleanup") == 1
    queues = families["jobsite_celery_queue_length"]
    assert {s.labels["queue"] for s in queues} == {"default", "long"}
    assert families["jobsite_broker_up"][0].value == 1


def test_no_sample_carries_prometheus_s_own_job_or_instance_label(api, runs):
    beat_seen(1)
    for samples in scrape(api).values():
        for sample in samples:
            assert not {"job", "instance"} & set(sample.labels), sample


def test_metrics_report_beat_up_from_the_heartbeat(api):
    assert "jobsite_beat_up 0.0" in api.get("/metrics").content.decode()
    beat_seen(2)
    text = api.get("/metrics").content.decode()
    assert "jobsite_beat_up 1.0" in text
    assert "jobsite_beat_last_seen_timestamp_seconds " in text


def test_the_backlog_gauge_is_the_newest_ended_run_s_backlog(api, schedules):
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    make_run("cleanup", hour - timedelta(days=1), result={"deleted": 10, "backlog": 900})
    make_run("cleanup", hour, result={"deleted": 10, "backlog": 1234})
    make_run("cleanup", hour + timedelta(minutes=1), "skipped_lock")  # did not run the service
    make_run("settlement", hour, result={"paid": 3})  # no backlog: 0
    make_run("live-stats-sync", hour, result={"backlog": "lots"})  # not a number: 0
    samples = {
        sample.labels["job_name"]: sample.value
        for family in text_string_to_metric_families(api.get("/metrics").content.decode())
        if family.name == "jobsite_job_backlog"
        for sample in family.samples
    }
    assert samples["cleanup"] == 1234
    assert samples["settlement"] == 0
    assert samples["live-stats-sync"] == 0
    assert samples["referral-tier2"] == 0  # never ran
    assert set(samples) == {job.name for job in all_jobs()}


def test_metrics_parse_as_prometheus_text(api, runs):
    beat_seen(1)
    families = {
        family.name: family
        for family in text_string_to_metric_families(api.get("/metrics").content.decode())
    }
    assert {"jobsite_job_backlog", "jobsite_beat_up", "jobsite_job_enabled"} <= set(families)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_running_beat_stamps_its_heartbeat_even_with_nothing_scheduled(tmp_path, client):
    def newest(**since: object) -> ProcessHeartbeat | None:
        return ProcessHeartbeat.objects.filter(pid=beat.pid, **since).first()

    with celery_process(beat_args(tmp_path), tmp_path / "beat.log") as beat:
        first = wait_for(newest, seconds=30)
        assert first is not None, (tmp_path / "beat.log").read_text()[-2000:]
        # Beat wakes every CELERY_BEAT_MAX_LOOP_INTERVAL (5 s) with an empty schedule too.
        assert wait_for(lambda: newest(last_tick_at__gt=first.last_tick_at), seconds=15)
        assert client.get("/healthz/beat").json() == {"status": "ok", "checks": {"beat": "ok"}}
    close_other_connections()


def wait_for(found, *, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := found():
            return value
        time.sleep(0.25)
    return None


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_killed_watchdog_turns_its_health_red(tmp_path, client, settings):
    """A real `manage.py watchdog`: its passes keep /healthz/watchdog green; SIGKILL (no
    cleanup) turns it red once its newest stamp is older than HEALTH_WATCHDOG_DOWN_AFTER (20 s
    here, so the test is short; 120 s by default)."""
    from tests.scheduler.processes import manage_process

    settings.HEALTH_WATCHDOG_DOWN_AFTER = 20
    log = tmp_path / "watchdog.log"
    with manage_process(["watchdog", "--interval", "2"], log) as watchdog:
        assert wait_for(lambda: client.get("/healthz/watchdog").status_code == 200, seconds=60), (
            log.read_text()[-2000:]
        )
        first = ProcessHeartbeat.objects.get(kind="watchdog", pid=watchdog.pid)
        # (a pass every 2 s stamps every time)
        assert wait_for(
            lambda: ProcessHeartbeat.objects.filter(
                pid=watchdog.pid, last_tick_at__gt=first.last_tick_at
            ).exists(),
            seconds=30,
        )
        watchdog.kill()
        watchdog.wait(10)
        killed = time.monotonic()
        assert wait_for(lambda: client.get("/healthz/watchdog").status_code == 503, seconds=60)
        red_after = time.monotonic() - killed
    close_other_connections()
    # red within the threshold (plus a pass's stamp interval), not before the heartbeat aged
    assert 15 <= red_after <= 20 + 2 + 3, red_after
