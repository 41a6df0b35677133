"""Outage incidents (monitoring.outages): one "beat down" / "broker down" incident per outage, with
the slots it cost counted into it, instead of one incident per job; and `missed` paged only once
the reconciler's catch-up cannot cover it (monitoring.alerts).

Real PostgreSQL and Redis; beat's liveness from its heartbeat row as beat leaves it.
"""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring import outages
from monitoring.alerts import alerts_evaluate
from monitoring.models import OUTAGE_JOB, AlertDelivery, Incident
from monitoring.outages import _State, outages_evaluate
from monitoring.watchdog import watchdog_pass
from scheduler.models import JobRun
from tests.chaos.harness import app_broker
from tests.ops.conftest import make_run
from tests.ops.test_health_metrics import beat_seen

pytestmark = pytest.mark.django_db
JOBS = ("live-stats-sync", "referral-tier2", "referral-tier3", "scheduled-notifications")
Kind = Incident.Kind


@pytest.fixture(autouse=True)
def _fresh_watchdog_memory(monkeypatch):
    """The watchdog's between-pass memory (monitoring.outages._State) starts empty in every test."""
    monkeypatch.setattr(_State, "queue_last_ok", {})
    monkeypatch.setattr(_State, "unserved_since", {})
    monkeypatch.setattr(_State, "broker_ok", True)
    # No worker runs on this Redis database here: `inspect active_queues` always waits its whole
    # timeout, and the tests judge what the watchdog makes of the silence, not how long it waits.
    monkeypatch.setattr(outages, "INSPECT_TIMEOUT", 0.2)
    monkeypatch.setattr(outages, "CONFIRM_TIMEOUT", 0.2)


def missed(job: str, slot, trigger: str = "beat") -> JobRun:
    """A row as the reconciler writes it: nothing started for the slot."""
    return JobRun.objects.create(
        job=job, slot=slot, status="missed", trigger=trigger, finished_at=timezone.now(),
        error="no run started for this slot",
    )  # fmt: skip


@pytest.fixture
def channels(settings, mailoutbox):
    from dataclasses import replace

    settings.ALERTS = replace(settings.ALERTS, emails=("ops@example.com",))
    return mailoutbox


def _minute(minutes_ago: int, second: int = 0):
    moment = timezone.now() - timedelta(minutes=minutes_ago)
    return moment.replace(second=second, microsecond=0)


def test_a_dead_beat_is_one_incident_with_every_jobs_missed_slots_under_it(channels):
    # given beat last seen 7 minutes ago, and the reconciler's missed rows for 4 jobs x 5 minutes
    beat_seen(7 * 60)
    for job in JOBS:
        for minutes_ago in range(6, 1, -1):
            missed(job, _minute(minutes_ago, second=30))

    # when the watchdog looks (outages first, then the per-job alerts)
    opened = outages_evaluate()
    counts = alerts_evaluate()

    # then one beat-down incident holds all 20 slots; no job has a missed incident of its own
    assert opened == {"opened": 1, "resolved": 0, "grouped": 20}
    assert counts["opened"] == 0
    incident = Incident.objects.get()
    assert (incident.job, incident.kind, incident.occurrences) == (OUTAGE_JOB, Kind.BEAT_DOWN, 20)
    assert incident.summary.startswith("beat down: no heartbeat since")
    assert incident.first_slot == _minute(6, second=30)
    assert incident.last_slot == _minute(2, second=30)
    assert [d.event for d in AlertDelivery.objects.all()] == ["opened"]  # one notice, not 20
    # and a second look changes nothing
    assert outages_evaluate() == {"opened": 0, "resolved": 0, "grouped": 0}
    assert alerts_evaluate() == {"opened": 0, "updated": 0, "resolved": 0}

    # when beat is back, and the reconciler later records a slot of the outage missed
    beat_seen(1)
    assert outages_evaluate()["resolved"] == 1
    missed("cleanup", _minute(1, second=35))
    assert outages_evaluate()["grouped"] == 1
    assert alerts_evaluate()["opened"] == 0

    # then the outage resolved with a notice, and the late-recorded slot is counted in it
    incident.refresh_from_db()
    assert not incident.is_open
    assert incident.resolution.startswith("beat is back")
    assert incident.occurrences == 21
    assert sorted(AlertDelivery.objects.values_list("event", flat=True)) == ["opened", "resolved"]


def test_a_job_missing_a_slot_while_beat_is_up_still_pages_for_that_job(channels):
    # given a healthy beat and one job that missed a slot (its worker died, say)
    beat_seen(2)
    missed("live-stats-sync", _minute(3, second=45))
    outages_evaluate()
    alerts_evaluate()
    incident = Incident.objects.get()
    assert (incident.job, incident.kind) == ("live-stats-sync", Kind.MISSED)


def test_a_late_start_after_beat_returns_belongs_to_the_outage(channels):
    # given beat down for 3 minutes; on its return it sends the current minute late
    beat_seen(3 * 60)
    outages_evaluate()
    make_run("settlement", _minute(2, second=40), started_at=timezone.now())
    beat_seen(0)
    outages_evaluate()
    assert alerts_evaluate()["opened"] == 0
    assert Incident.objects.get().occurrences == 1


def test_no_beat_ever_is_beat_down():
    outages_evaluate()
    incident = Incident.objects.get()
    assert incident.kind == Kind.BEAT_DOWN
    assert "no beat has ever stamped" in incident.summary


def test_a_broker_that_does_not_answer_is_one_incident_until_it_answers(channels):
    beat_seen(1)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    with app_broker(f"redis://127.0.0.1:{closed}/0"):
        assert outages_evaluate()["opened"] == 1
        assert outages_evaluate()["opened"] == 0
    incident = Incident.objects.get()
    assert (incident.job, incident.kind) == (OUTAGE_JOB, Kind.BROKER_DOWN)
    assert "Error" in incident.detail
    assert outages_evaluate()["resolved"] == 1


def test_the_database_refuses_an_outage_kind_on_a_job():
    from django.db import IntegrityError

    now = timezone.now()
    with pytest.raises(IntegrityError):
        Incident.objects.create(
            job="cleanup", kind=Kind.BEAT_DOWN, opened_at=now, summary="x", occurrences=0
        )


def test_metrics_export_an_outage_as_job_name_star(api):
    beat_seen(600)
    outages_evaluate()
    text = api.get("/metrics", HTTP_ACCEPT="text/plain").content.decode()
    assert 'jobsite_job_open_incidents{job_name="*",kind="beat_down"} 1.0' in text
    assert 'jobsite_job_open_incidents{job_name="*",kind="broker_down"} 0.0' in text
    # jobs carry only their own kinds
    assert 'job_name="cleanup",kind="beat_down"' not in text
    assert 'jobsite_job_open_incidents{job_name="cleanup",kind="missed"} 0.0' in text


# ---------------------------------------------------------------------------------------------
# Before paging `missed`: what the reconciler's catch-up will do
# ---------------------------------------------------------------------------------------------


def test_missed_slots_covered_by_the_reconcilers_catch_up_are_not_paged(channels):
    # given a healthy beat, two slots recorded missed and the newest re-sent by the reconciler
    beat_seen(2)
    job = "live-stats-sync"
    missed(job, _minute(4, second=45))
    missed(job, _minute(3, second=45))
    catch_up = JobRun.objects.create(
        job=job, slot=_minute(2, second=45), status="queued", trigger="reconciler"
    )
    # then nothing pages while the re-send is queued, nor once it succeeded
    assert alerts_evaluate()["opened"] == 0
    JobRun.objects.filter(pk=catch_up.pk).update(status="succeeded", finished_at=timezone.now())
    assert alerts_evaluate()["opened"] == 0
    assert not Incident.objects.exists()


def test_missed_slots_page_when_the_catch_up_fails(channels):
    beat_seen(2)
    job = "live-stats-sync"
    missed(job, _minute(4, second=45))
    catch_up = JobRun.objects.create(
        job=job, slot=_minute(2, second=45), status="queued", trigger="reconciler"
    )
    assert alerts_evaluate()["opened"] == 0
    JobRun.objects.filter(pk=catch_up.pk).update(status="expired", finished_at=timezone.now())
    assert alerts_evaluate()["opened"] == 1
    incident = Incident.objects.get()
    assert (incident.kind, incident.occurrences) == (Kind.MISSED, 2)  # the slot and its re-send


@pytest.fixture
def no_schedules() -> None:
    """No schedule for the reconciler step to account (rows other tests of the module share
    would cost it a day of missed slots per job)."""
    from django_celery_beat.models import PeriodicTask

    PeriodicTask.objects.all().delete()


def test_a_watchdog_pass_looks_for_outages_first(no_schedules):
    beat_seen(2)
    report = watchdog_pass()
    assert list(report.steps) == ["outages", "reconciler", "alerts", "deliveries"]
    assert report.steps["outages"] == {"opened": 0, "resolved": 0, "grouped": 0}


def test_the_workers_step_runs_only_when_asked_for(no_schedules):
    beat_seen(2)
    report = watchdog_pass(judge_workers=True)
    assert list(report.steps) == ["outages", "workers", "reconciler", "alerts", "deliveries"]


def test_a_queue_with_work_due_and_no_worker_is_one_incident_per_queue(
    schedules, api, channels, settings
):
    # given every job enabled (on `default` and `long`) and no worker on this Redis database
    from django.conf import settings as django_settings

    from monitoring.outages import queue_workers_evaluate
    from monitoring.queues import QUEUE_WORKERS_KEY

    # when the watchdog looks, and looks again once they have stayed unserved for as long as
    # beat may stay silent (a worker restarting is not an outage), and once more
    _State.unserved_since.clear()
    first = timezone.now()
    assert queue_workers_evaluate(now=first) == {"opened": 0, "resolved": 0}
    later = first + timedelta(seconds=settings.HEALTH_BEAT_DOWN_AFTER)
    assert queue_workers_evaluate(now=later) == {"opened": 2, "resolved": 0}
    assert queue_workers_evaluate(now=later) == {"opened": 0, "resolved": 0}

    # then one incident per queue, each notified once, and the metric says 0 consumers
    incidents = Incident.objects.filter(kind=Kind.NO_WORKER).order_by("job")
    assert [(i.job, i.is_open) for i in incidents] == [
        ("queue:default", True),
        ("queue:long", True),
    ]
    assert AlertDelivery.objects.filter(incident__in=incidents, event="opened").count() == 2
    text = api.get("/metrics").content.decode()
    assert 'jobsite_queue_workers{queue="default"} 0.0' in text
    assert 'job_name="queue:' not in text  # not a job: no per-job series for it

    # when no work is due on them any more (every job disabled, nothing waiting), they resolve
    from django_celery_beat.models import PeriodicTask

    PeriodicTask.objects.update(enabled=False)
    assert queue_workers_evaluate() == {"opened": 0, "resolved": 2}
    import redis

    redis.Redis.from_url(django_settings.CELERY_BROKER_URL).delete(QUEUE_WORKERS_KEY)


# ---------------------------------------------------------------------------------------------
# Beat's state in the admin header, on every page
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", ["/admin/", "/admin/monitoring/incident/", "/admin/auth/user/"])
def test_the_admin_header_shows_beat_down_on_every_page(admin_client, page):
    beat_seen(300)
    html = admin_client.get(page).content.decode()
    assert 'id="beat-state" data-state="down"' in html
    assert "beat down, last seen 300 s ago" in html or "beat down, last seen 301 s ago" in html


def test_the_admin_header_shows_beat_up_with_its_age(admin_client):
    beat_seen(3)
    html = admin_client.get("/admin/").content.decode()
    assert 'data-state="ok"' in html
    assert "beat up, last seen 3 s ago" in html


def test_the_header_reads_beat_only_for_staff_who_may_see_runs(client, django_user_model):
    from django.contrib.auth.models import Permission

    beat_seen(3)
    user = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    client.force_login(user)
    assert "beat-state" not in client.get("/admin/").content.decode()
    user.user_permissions.add(Permission.objects.get(codename="view_jobrun"))
    assert "beat-state" in client.get("/admin/").content.decode()


def test_workers_reconnecting_after_a_broker_outage_are_not_a_no_worker_incident(
    schedules, settings
):
    """Celery workers reconnect with a growing back-off (up to ~30 s) once the broker is back:
    their absence is timed from the broker's return, not from before the outage."""
    from django.conf import settings as django_settings

    from monitoring.outages import queue_workers_evaluate
    from monitoring.queues import QUEUE_WORKERS_KEY

    # given queues with work due and no worker, seen unserved before the broker went down
    _State.unserved_since.clear()
    _State.queue_last_ok.clear()
    start = timezone.now()
    assert queue_workers_evaluate(now=start) == {"opened": 0, "resolved": 0}
    down_after = timedelta(seconds=settings.HEALTH_BEAT_DOWN_AFTER)
    try:
        # when the broker is down for longer than the threshold (the broker-down incident's)
        _State.broker_ok = False
        assert queue_workers_evaluate(now=start + down_after) == {"opened": 0, "resolved": 0}
        # then just after its return nothing is paged yet; it is, once still unserved
        _State.broker_ok = True
        back = start + 2 * down_after
        assert queue_workers_evaluate(now=back) == {"opened": 0, "resolved": 0}
        assert queue_workers_evaluate(now=back + down_after / 2) == {"opened": 0, "resolved": 0}
        assert queue_workers_evaluate(now=back + down_after) == {"opened": 2, "resolved": 0}
    finally:
        _State.broker_ok = True
        _State.unserved_since.clear()
        _State.queue_last_ok.clear()
        import redis

        redis.Redis.from_url(django_settings.CELERY_BROKER_URL).delete(QUEUE_WORKERS_KEY)


def test_slots_a_queue_without_a_worker_costs_are_grouped_under_its_incident(
    schedules, channels, monkeypatch
):
    # given beat up, no worker on this Redis database, and only the `long` queue's jobs enabled;
    # the watchdog found `long` with no work due 100 s ago
    from django.conf import settings as django_settings
    from django_celery_beat.models import PeriodicTask

    from monitoring.outages import _State, queue_jobs, queue_workers_evaluate
    from monitoring.queues import QUEUE_WORKERS_KEY

    monkeypatch.setattr(_State, "queue_last_ok", {})
    base = timezone.now().replace(microsecond=0)

    def ago(seconds: int):
        return base - timedelta(seconds=seconds)

    beat_seen(2)
    on_long = queue_jobs("long")
    assert on_long == ["cleanup", "leaderboard-ranking", "retention-pruning", "settlement"]
    PeriodicTask.objects.update(enabled=False)
    queue_workers_evaluate(now=ago(100))
    PeriodicTask.objects.filter(name__in=on_long).update(enabled=True)
    assert queue_workers_evaluate(now=base) == {"opened": 1, "resolved": 0}
    incident = Incident.objects.get(kind=Kind.NO_WORKER)
    assert (incident.job, incident.down_since) == ("queue:long", ago(100))

    # when the reconciler records slots of `long` jobs missed, and one of a `default` job
    missed("cleanup", ago(95))
    missed("settlement", ago(60))
    missed("settlement", ago(30))
    missed("live-stats-sync", ago(45))
    counts = outages_evaluate()
    opened = alerts_evaluate()["opened"]

    # then the queue's incident holds the 3 slots; only the `default` job pages on its own
    assert counts["grouped"] == 3
    assert opened == 1
    incident.refresh_from_db()
    assert (incident.occurrences, incident.first_slot, incident.last_slot) == (3, ago(95), ago(30))
    per_job = Incident.objects.filter(kind__in=(Kind.MISSED, Kind.LATE))
    assert [(i.job, i.kind) for i in per_job] == [("live-stats-sync", Kind.MISSED)]
    assert AlertDelivery.objects.filter(incident=incident).count() == 1  # one notice

    # when the incident resolves, and a message that waited in the queue then starts late
    PeriodicTask.objects.update(enabled=False)
    assert queue_workers_evaluate()["resolved"] == 1
    make_run("settlement", ago(90), started_at=timezone.now())
    assert outages_evaluate()["grouped"] == 1
    assert alerts_evaluate()["opened"] == 0

    # then the late start is counted in it too, and a second look changes nothing
    incident.refresh_from_db()
    assert incident.occurrences == 4
    assert outages_evaluate()["grouped"] == 0
    assert alerts_evaluate() == {"opened": 0, "updated": 0, "resolved": 0}
    import redis

    redis.Redis.from_url(django_settings.CELERY_BROKER_URL).delete(QUEUE_WORKERS_KEY)


def test_a_no_worker_window_starts_no_earlier_than_this_process_can_vouch_for(monkeypatch):
    # given this process last found `long` fine 10 minutes ago (it skipped passes since)
    from monitoring.outages import _queue_down_since, _State

    now = timezone.now()
    monkeypatch.setattr(_State, "queue_last_ok", {"long": now - timedelta(minutes=10)})
    # then a no-worker incident opened now starts now, not 10 minutes back
    assert _queue_down_since("long", now) == now
    monkeypatch.setattr(_State, "queue_last_ok", {"long": now - timedelta(seconds=40)})
    assert _queue_down_since("long", now) == now - timedelta(seconds=40)
