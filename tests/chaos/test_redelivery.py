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
# before the first one acknowledges the messages.
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


def test_messages_held_past_the_visibility_timeout(cluster, chaos_ledger, chaos_jobs):
    """2: countdown longer than the visibility timeout, and an acks_late job running past it

    Expected: each slot runs once (one `succeeded` owner); every redelivery ends as a
    `duplicate` row with the same task id (or a retry that waits); each item is paid once, by
    one of the two runs.
    """
    running, counting = chaos_jobs["chaos-settlement"], chaos_jobs["chaos-db-settlement"]
    cluster.env["CELERY_VISIBILITY_TIMEOUT"] = str(VISIBILITY)
    first = cluster.worker("w1", CHAOS_SLEEP_AFTER=str(RUNNING))  # only `running` sleeps
    # An acks_late job that pays at once, then goes on running, unacknowledged.
    early = seed_money(tag="f2a", players=20, per_player=10, credits=10)
    now = timezone.now().replace(microsecond=0)
    slots = {running.name: now, counting.name: now + timedelta(seconds=COUNTDOWN)}
    ids = {running.name: cluster.send(running, slots[running.name])}
    wait_for(lambda: pending_items() == 0, 30, "the running job to pay")
    # Money that arrives meanwhile, for a countdown message held until its ETA, unacknowledged.
    late = seed_money(tag="f2b", players=20, per_player=10, credits=10, first_day=1000)
    ids[counting.name] = cluster.send(
        counting, slots[counting.name], countdown=(slots[counting.name] - now).total_seconds()
    )
    first.wait_log(f"[{ids[counting.name]}] received", timeout=10)
    held_since = time.monotonic()
    assert cluster.unacked() == 2
    for job, slot in slots.items():
        chaos_ledger.expect(job, slot)

    # Past the visibility timeout, a new worker's consumer start hands both out again.
    time.sleep(max(0.0, held_since + VISIBILITY + 2 - time.monotonic()))
    assert [r.status for r in JobRun.objects.all()] == [Status.RUNNING]
    second = cluster.worker("w2")
    workers = [first, second]
    for job, task_id in ids.items():
        wait_for(lambda t=task_id: _deliveries(workers, t) >= 2, 30, f"{job} delivered again")

    def settled(job: str) -> bool:
        """The slot ran, and every reception after the first ended as a wait (a retry, received
        again later) or as a duplicate row."""
        rows = JobRun.objects.filter(job=job, slot=slots[job])
        duplicates = rows.filter(status=Status.DUPLICATE).count()
        return (
            rows.filter(status=Status.SUCCEEDED).exists()
            and not rows.filter(status__in=(Status.QUEUED, Status.RUNNING)).exists()
            and _deliveries(workers, ids[job]) - 1 == _waits(workers, ids[job]) + duplicates
        )

    def quiet() -> bool:
        return all(settled(job) for job in slots) and cluster.unacked() == 0

    wait_for(quiet, COUNTDOWN + RUNNING + 30, "each run and each extra delivery", every=0.5)
    time.sleep(2)  # a delivery still on its way would show up now
    wait_for(quiet, 30, "every message to be acknowledged", every=0.5)
    notes, paid = [], 0
    for job, task_id in ids.items():
        rows = list(JobRun.objects.filter(job=job, slot=slots[job]).order_by("id"))
        waits = _waits(workers, task_id)
        redelivered = _deliveries(workers, task_id) - 1 - waits
        owners = [(r.attempt, r.status) for r in rows if r.duplicate_of_id is None]
        assert owners == [(1, Status.SUCCEEDED)], (job, owners)
        assert redelivered >= 1, job
        assert sum(r.status == Status.DUPLICATE for r in rows) == redelivered, (job, rows)
        # Every row comes from this one message: a redelivery by Redis, not a second send.
        assert {r.task_id for r in rows} == {task_id}
        run = next(r for r in rows if r.status == Status.SUCCEEDED)
        paid += run.result["settled_items"]
        kind = "running" if job == running.name else "countdown"
        notes.append(
            f"{kind}: {redelivered} redelivery(ies) recorded duplicate ({waits} wait(s) of one "
            f"lock TTL while the first ran); ran {run.lateness_ms} ms late for {run.duration_ms} ms"
        )
    assert paid == early + late  # each item paid by one of the two runs, once
    assert pending_items() == 0
    assert settled_items() == early + late
    chaos_ledger.note("; ".join(notes))
