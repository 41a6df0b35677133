"""A worker SIGKILLed in the middle of a run: the attempt is lost and the slot completes once."""

from __future__ import annotations

import signal
import time

import pytest

from scheduler.models import JobRun
from scheduler.registry import get_job
from scheduler.services.dispatch import job_trigger
from scheduler.services.reconcile import ledger_reconcile
from tests.scheduler.conftest import close_other_connections
from tests.scheduler.processes import celery_process, worker_args

Status = JobRun.Status
pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _wait_for(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_a_killed_workers_run_is_lost_and_its_slot_completes_once(tmp_path):
    job = get_job("sample-sleeper")  # lock TTL 10 s
    short = {"CELERY_VISIBILITY_TIMEOUT": "15"}
    with celery_process(
        worker_args(tmp_path, "doomed"), tmp_path / "w1.log", SAMPLE_SLEEP="60", **short
    ) as doomed:
        run = job_trigger(job=job, trigger="api", reason="kill test")
        _wait_for(lambda: JobRun.objects.get(pk=run.pk).status == Status.RUNNING, 30)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)

    with celery_process(
        worker_args(tmp_path, "rescuer"), tmp_path / "w2.log", SAMPLE_SLEEP="0.2", **short
    ):
        # The reconciler (beat's, here called directly) notices the stale heartbeat; Redis also
        # redelivers the unacknowledged message after the visibility timeout. Either way: once.
        def settled() -> bool:
            ledger_reconcile()
            return JobRun.objects.filter(
                job=job.name, slot=run.slot, status=Status.SUCCEEDED
            ).exists()

        _wait_for(settled, 60)
        time.sleep(20)  # let the redelivery of the original message arrive and be recorded
    close_other_connections()

    rows = list(JobRun.objects.filter(job=job.name, slot=run.slot).order_by("attempt", "id"))
    statuses = [r.status for r in rows]
    print("ledger rows of the slot:", [(r.attempt, r.status, r.trigger, r.worker) for r in rows])
    assert statuses.count(Status.SUCCEEDED) == 1, statuses
    assert rows[0].status == Status.LOST
    assert rows[0].worker.startswith("doomed@")
    succeeded = next(r for r in rows if r.status == Status.SUCCEEDED)
    assert succeeded.attempt == 2
    assert succeeded.worker.startswith("rescuer@")
    assert set(statuses) <= {Status.LOST, Status.SUCCEEDED, Status.DUPLICATE}
