"""Fault 2: Redis delivers a message again when it stays unacknowledged past the visibility
timeout -- a countdown longer than the timeout, and an `acks_late` job running past it. One
effect; every extra delivery is recorded as a duplicate.

The workers run with the smallest visibility timeout the settings accept (CELERY_VISIBILITY_TIMEOUT
=10, jobsite/settings.py -> broker_transport_options). kombu moves a message unacknowledged for
longer than that back to its queue when a worker's consumer starts, and every ~100 s after that
(restore_visible at every 10th 10-second poll): here a second worker's start does it, as a
scale-out or a rolling deploy does in production. Nothing in the test moves a message itself.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from scheduler.models import JobRun
from tests.chaos.harness import Proc, wait_for
from tests.chaos.seed import pending_items, seed_money, settled_items

Status = JobRun.Status
pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]
VISIBILITY = 10  # seconds, the settings' minimum
# Both leave a second worker (started a visibility timeout in) ~25 s to start on a loaded machine
# before the first one acknowledges the message.
COUNTDOWN = 40  # seconds, four visibility timeouts
RUNNING = 40  # seconds the job goes on after paying (CHAOS_SLEEP_AFTER)


def _deliveries(workers: list[Proc], task_id: str) -> int:
    """Messages with this id that reached a worker: Redis's deliveries plus the task's own retries
    (a redelivery that finds its first execution alive waits a lock TTL by retrying)."""
    needle = re.compile(rf"\[{re.escape(task_id)}\] received")
    return sum(len(needle.findall(worker.text())) for worker in workers)


def _waits(workers: list[Proc], task_id: str) -> int:
    needle = re.compile(rf"\[{re.escape(task_id)}\] retry: Retry in")
    return sum(len(needle.findall(worker.text())) for worker in workers)


@pytest.mark.parametrize("held", ["countdown", "running"])
def test_message_held_past_the_visibility_timeout(cluster, chaos_ledger, chaos_jobs, held):
    """2: message held unacknowledged past Redis's visibility timeout"""
    chaos_ledger.fault = {
        "countdown": f"2: countdown ({COUNTDOWN} s) longer than the visibility timeout",
        "running": f"2: acks_late job running {RUNNING} s, past the visibility timeout",
    }[held]
    job = chaos_jobs["chaos-settlement"]
    cluster.env["CELERY_VISIBILITY_TIMEOUT"] = str(VISIBILITY)
    items = seed_money(tag="f2", players=20, per_player=10, credits=10)
    if held == "countdown":
        first = cluster.worker("w1")
        slot = timezone.now().replace(microsecond=0) + timedelta(seconds=COUNTDOWN)
        task_id = cluster.send(job, slot, countdown=(slot - timezone.now()).total_seconds())
        first.wait_log(f"[{task_id}] received", timeout=10)
        assert cluster.unacked() == 1  # held by w1 until its ETA, unacknowledged
    else:
        first = cluster.worker("w1", CHAOS_SLEEP_AFTER=str(RUNNING))
        slot = timezone.now().replace(microsecond=0)
        task_id = cluster.send(job, slot)
        first.wait_log(f"[{task_id}] received", timeout=10)
        wait_for(lambda: pending_items() == 0, 30, "the run to pay")  # then it goes on running
        assert JobRun.objects.get(job=job.name, slot=slot).status == Status.RUNNING
    held_since = time.monotonic()
    chaos_ledger.expect(job.name, slot)

    # Past the visibility timeout, a new worker's consumer start hands the message out again.
    time.sleep(max(0.0, held_since + VISIBILITY + 2 - time.monotonic()))
    still = [r.status for r in JobRun.objects.filter(job=job.name, slot=slot)]
    assert still == ([] if held == "countdown" else [Status.RUNNING]), still
    second = cluster.worker("w2")
    workers = [first, second]
    wait_for(lambda: _deliveries(workers, task_id) >= 2, 30, "Redis to deliver the message again")

    def settled() -> bool:
        """The slot ran, and every reception after the first ended as a wait (a retry, received
        again later) or as a duplicate row, with no message left held or queued."""
        rows = JobRun.objects.filter(job=job.name, slot=slot)
        duplicates = rows.filter(status=Status.DUPLICATE).count()
        return (
            rows.filter(status=Status.SUCCEEDED).exists()
            and not rows.filter(status__in=(Status.QUEUED, Status.RUNNING)).exists()
            and _deliveries(workers, task_id) - 1 == _waits(workers, task_id) + duplicates
            and cluster.unacked() == 0
        )

    wait_for(settled, COUNTDOWN + RUNNING + 30, "the slot's run and each extra delivery", every=0.5)
    time.sleep(2)  # a delivery still on its way would show up now
    wait_for(settled, 30, "the slot to settle again", every=0.5)
    rows = list(JobRun.objects.filter(job=job.name, slot=slot).order_by("id"))
    waits = _waits(workers, task_id)
    redelivered = _deliveries(workers, task_id) - 1 - waits
    owners = [(r.attempt, r.status) for r in rows if r.duplicate_of_id is None]
    duplicates = [r for r in rows if r.status == Status.DUPLICATE]
    assert owners == [(1, Status.SUCCEEDED)], owners
    assert redelivered >= 1
    assert len(duplicates) == redelivered, (redelivered, [(r.status, r.reason) for r in rows])
    # Every row comes from this one message: a redelivery by Redis, not a second send.
    assert {r.task_id for r in rows} == {task_id}
    run = next(r for r in rows if r.status == Status.SUCCEEDED)
    assert run.result["settled_items"] == items
    assert pending_items() == 0
    assert settled_items() == items
    chaos_ledger.note(
        f"{held}: {redelivered} redelivery(ies) by Redis, each recorded duplicate "
        f"({waits} wait(s) of one lock TTL while the first ran); the run: "
        f"{run.worker.split('@')[0]}, {run.lateness_ms} ms late, {run.duration_ms} ms"
    )
