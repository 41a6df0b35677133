"""Beat killed: red within a minute, one "beat down" incident, resolved when beat is back.

A real beat (the test profile's chaos jobs, every minute) is SIGKILLed: no cleanup, its heartbeat
simply stops. /healthz/beat must answer 503 within HEALTH_BEAT_DOWN_AFTER (60 s) of the kill; one
watchdog pass then opens exactly one `beat_down` incident (job `*`), not one per job; the admin
header says beat is down; a restarted beat resolves it at the next pass.
"""

from __future__ import annotations

import time

import pytest
from django.utils import timezone

from monitoring.liveness import beat_liveness
from monitoring.models import Incident
from monitoring.watchdog import watchdog_pass
from scheduler.models import JobRun
from tests.chaos.harness import wait_for
from tests.chaos.test_beat import _only_these_jobs

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]


def test_a_killed_beat_is_one_incident_until_back(cluster, chaos_ledger, client, admin_client):
    """beat SIGKILLed, then restarted: /healthz/beat, one beat-down incident, its recovery

    Expected: /healthz/beat answers 503 within 60 s of the kill; one watchdog pass opens exactly
    one `beat_down` incident and the admin shows beat down; after the restart a pass resolves it
    ("beat is back") and the admin shows beat ok.
    """
    _only_these_jobs(("chaos-tick", "chaos-tock"))
    cluster.worker("w1", ready=False)  # runs what beat and the reconciler's catch-up send
    beat = cluster.beat("beat")
    beat.wait_loaded(timeout=60)
    wait_for(lambda: beat_liveness().state == "ok", 30, "beat's first heartbeat")
    assert client.get("/healthz/beat").status_code == 200
    assert watchdog_pass().steps["outages"] == {"opened": 0, "resolved": 0, "grouped": 0}

    # when beat is killed
    beat.kill()
    killed = time.monotonic()

    # then /healthz/beat turns red within a minute of the kill
    wait_for(lambda: client.get("/healthz/beat").status_code == 503, 75, "/healthz/beat 503", 1)
    red_after = time.monotonic() - killed
    assert red_after <= 61, red_after
    # and one watchdog pass opens exactly one incident, beat's, whatever the number of jobs
    report = watchdog_pass()
    assert report.steps["outages"]["opened"] == 1, report.describe()
    incident = Incident.objects.get()
    assert (incident.job, incident.kind, incident.is_open) == ("*", "beat_down", True)
    assert incident.down_since < timezone.now()
    # and every admin page's header says so
    html = admin_client.get("/admin/").content.decode()
    assert 'id="beat-state" data-state="down"' in html

    # when beat is started again
    again = cluster.beat("beat-again")
    again.wait_loaded(timeout=60)
    wait_for(lambda: beat_liveness().state == "ok", 30, "the new beat's heartbeat")
    report = watchdog_pass()

    # then the incident resolves, and it is still the only one
    assert report.steps["outages"]["resolved"] == 1, report.describe()
    incident.refresh_from_db()
    assert not incident.is_open
    assert incident.resolution.startswith("beat is back")
    assert Incident.objects.count() == 1
    assert 'data-state="ok"' in admin_client.get("/admin/").content.decode()
    # (what the reconciler re-sent meanwhile runs, so that every slot ends accounted)
    unsettled = JobRun.objects.filter(status__in=("queued", "running", "retrying"))
    wait_for(lambda: not unsettled.exists(), 90, "the re-sent slots to run", every=1)
    chaos_ledger.note(
        f"/healthz/beat 503 {red_after:.0f} s after SIGKILL; one beat_down incident "
        f"({incident.occurrences} slot(s) under it), resolved by the restarted beat"
    )
