"""No worker on a queue: the watchdog raises one incident per queue with work due and no consumer,
and closes it when a worker consumes the queue again.

Real processes: a worker, a `manage.py watchdog` (every 2 s; beat and workers judged after 15 s,
HEALTH_BEAT_DOWN_AFTER, instead of a minute) and the cluster's Redis. Who consumes what is asked of
the workers (`inspect active_queues`, monitoring.outages): a worker stopped with SIGTERM stops
answering.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring.models import Incident
from monitoring.queues import broker_counts
from scheduler.models import JobRun
from tests.chaos.harness import wait_for
from tests.chaos.test_beat import _only_these_jobs

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]


def test_a_queue_without_a_worker_is_one_incident_until_a_worker_is_back(cluster, chaos_ledger):
    """no worker on a queue: worker stopped, then started again

    Expected: while the only worker runs, the watchdog counts one consumer on each queue; once
    it is stopped, one `no_worker` incident opens for the queue with work due (none for a queue
    with nothing due), and a slot its job misses is counted into it; when a new worker consumes
    the queue, a pass resolves the incident.
    """
    # given a job enabled on `long` (chaos-settlement) and nothing on `default`
    _only_these_jobs(("chaos-settlement",))
    worker = cluster.worker("w1")  # consumes default and long
    watchdog = cluster.watchdog(interval=2, HEALTH_BEAT_DOWN_AFTER="15")
    no_worker = Incident.objects.filter(kind=Incident.Kind.NO_WORKER)

    # the watchdog's counts reach the metrics: one consumer on each queue
    def counted() -> dict[str, int]:
        return broker_counts(cluster.redis.url)[2]

    wait_for(lambda: counted() == {"default": 1, "long": 1}, 60, "the watchdog's count")
    assert not no_worker.exists()

    # when the worker stops
    worker.term()
    stopped = time.monotonic()

    # then one incident opens once the queue has stayed unserved for HEALTH_BEAT_DOWN_AFTER
    # (15 s here), for the queue that has work due; `default` has none
    incident = wait_for(no_worker.first, 60, "a no-worker incident", every=0.5)
    opened_after = time.monotonic() - stopped
    assert (incident.job, incident.is_open) == ("queue:long", True)
    assert incident.summary.startswith("no worker on queue long")
    wait_for(lambda: counted() == {"default": 0, "long": 0}, 10, "the count of none")
    time.sleep(5)  # two more passes open nothing more
    assert no_worker.count() == 1

    # and a slot of the queue's job recorded missed meanwhile (a row as the reconciler writes
    # it; its own would take the job's 10-minute starting deadline) is counted into the queue's
    # incident by the watchdog process, and opens no incident of the job's own
    incident.refresh_from_db()
    assert incident.down_since is not None  # the last pass that found `long` consumed
    slot = incident.down_since.replace(microsecond=0) + timedelta(seconds=1)
    assert slot <= timezone.now()
    JobRun.objects.create(
        job="chaos-settlement", slot=slot, status="missed",
        trigger="beat", finished_at=timezone.now(), error="no run started for this slot",
    )  # fmt: skip
    wait_for(lambda: no_worker.get().occurrences == 1, 15, "the slot counted in", every=0.5)
    assert not Incident.objects.filter(job="chaos-settlement").exists()

    # when a worker consumes the queue again
    cluster.worker("w2")
    started = time.monotonic()

    # then the incident resolves, and it is still the only one
    wait_for(lambda: not no_worker.filter(resolved_at=None).exists(), 30, "the resolution", 0.5)
    resolved_after = time.monotonic() - started
    incident.refresh_from_db()
    assert incident.resolution == "consumed by w2@chaos"
    assert no_worker.count() == 1
    assert watchdog.alive
    # and what the watchdog re-sent meanwhile runs on the new worker before the test ends (the
    # re-send of a slot may wait for a free second; the ledger check at teardown wants it run)
    queued = JobRun.objects.filter(job="chaos-settlement", status=JobRun.Status.QUEUED)
    wait_for(lambda: not queued.exists(), 90, "the re-sent slots to run", every=0.5)
    chaos_ledger.note(
        f"no-worker incident {opened_after:.0f} s after SIGTERM of the only worker (a pass "
        f"every 2 s), resolved {resolved_after:.0f} s after a worker was ready again"
    )
