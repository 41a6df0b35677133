"""Money jobs under duplicate deliveries, killed and frozen workers, and a killed database backend.

The money is the real settlement service (`referrals.services.settlement.settlement_run`) behind
a job with a 10 s lock TTL (tests/chaos/jobs.py); the check after each test proves the ledger
balances and that no item was paid twice.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.utils import timezone

from scheduler.models import JobRun
from scheduler.services.reconcile import ledger_reconcile
from tests.chaos.harness import backends, terminate_backends, wait_for
from tests.chaos.seed import pending_items, seed_money, settled_items

Status = JobRun.Status
pytestmark = [pytest.mark.chaos, pytest.mark.timeout(180)]
SLOW_PAY = {
    "REFERRAL_PAYOUT_CHANNEL": "tests.chaos.jobs.SlowWalletPayout",
    "REFERRAL_SETTLEMENT_BATCH_SIZE": "50",
}


def _slot_rows(job: str, slot) -> list[JobRun]:
    return list(JobRun.objects.filter(job=job, slot=slot).order_by("attempt", "id"))


def _settled(job: str, slot) -> bool:
    rows = _slot_rows(job, slot)
    return any(r.status == Status.SUCCEEDED for r in rows) and not any(
        r.status in (Status.QUEUED, Status.RUNNING) for r in rows
    )


def test_same_money_slot_ten_times_to_two_workers(cluster, chaos_ledger, chaos_jobs):
    """1: one money slot delivered 10x at once to two workers

    Expected: one delivery runs the slot (`succeeded`), the nine others are `duplicate` rows,
    both workers took deliveries; every item paid once.
    """
    job = chaos_jobs["chaos-settlement"]
    items = seed_money(tag="f1", players=40, per_player=25, credits=20)
    env = {**SLOW_PAY, "CHAOS_PAY_DELAY": "0.02"}
    workers = [cluster.worker(name, ready=False, **env) for name in ("w1", "w2")]
    for worker in workers:
        worker.wait_log(" ready.")
    slot = timezone.now().replace(microsecond=0)
    chaos_ledger.expect(job.name, slot)

    for _ in range(10):
        cluster.send(job, slot)

    wait_for(lambda: JobRun.objects.filter(job=job.name, slot=slot).count() == 10, 60, "10 rows")
    wait_for(lambda: _settled(job.name, slot), 60, "the slot to finish")
    rows = _slot_rows(job.name, slot)
    statuses = sorted(r.status for r in rows)
    assert statuses == [Status.DUPLICATE] * 9 + [Status.SUCCEEDED], statuses
    owner = next(r for r in rows if r.status == Status.SUCCEEDED)
    assert owner.result["settled_items"] == items
    assert {r.worker.split("@")[0] for r in rows} == {"w1", "w2"}, "both workers took deliveries"
    assert pending_items() == 0
    assert settled_items() == items


def _in_open_transaction(application: str) -> bool:
    """The process's settlement backend is inside a transaction (not the heartbeat's UPDATE)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = %s AND xact_start IS NOT NULL "
            "AND state IN ('active', 'idle in transaction') "
            "AND query NOT LIKE '%%joblease%%' AND query NOT LIKE '%%heartbeat_at%%'",
            [application],
        )
        return cursor.fetchone()[0] > 0


def _recover(job_name: str, slot) -> None:
    """Beat's reconciler (called here, every half second) until the slot has succeeded."""

    def succeeded() -> bool:
        ledger_reconcile()
        return _settled(job_name, slot)

    wait_for(succeeded, 60, f"{job_name} {slot:%H:%M:%S} to succeed", every=0.5)


@pytest.mark.parametrize("moment", ["before-commit", "after-commit-before-ack"])
def test_worker_sigkilled_mid_settlement(cluster, chaos_ledger, chaos_jobs, moment):
    """3: worker SIGKILLed mid-settlement

    Expected: the killed run is recorded `lost` and the reconciler's re-send runs the slot on
    the other worker; items paid before the kill are not paid again; the killed worker's
    message, delivered again, is a `duplicate`; every item paid once.
    """
    chaos_ledger.fault = f"3: worker SIGKILLed mid-settlement, {moment.replace('-', ' ')}"
    job = chaos_jobs["chaos-settlement"]
    items = seed_money(tag="f3", players=60, per_player=20, credits=30)
    # The killed message comes back when the test restores it (below, after the re-send ran),
    # not when the rescuer starts: with the harness's 60 s visibility timeout a loaded machine's
    # slow worker start cannot let it overtake the reconciler's re-send (it did at 10 s).
    if moment == "before-commit":
        doomed = cluster.worker("doomed", **SLOW_PAY, CHAOS_PAY_DELAY="0.05")
    else:
        doomed = cluster.worker("doomed", **SLOW_PAY, CHAOS_SLEEP_AFTER="60")
    slot = timezone.now().replace(microsecond=0)
    chaos_ledger.expect(job.name, slot)
    cluster.send(job, slot)

    if moment == "before-commit":
        wait_for(
            lambda: settled_items() >= 50 and _in_open_transaction("chaos-doomed"),
            60,
            "a committed batch and an open one",
            every=0.01,
        )
    else:
        wait_for(lambda: pending_items() == 0, 60, "every item to commit")
        assert JobRun.objects.get(job=job.name, slot=slot).status == Status.RUNNING
    doomed.kill()
    wait_for(lambda: not backends("chaos-doomed"), 10, "the killed worker's backends to end")
    paid_by_the_dead = settled_items()
    if moment == "before-commit":
        assert 0 < paid_by_the_dead < items
    else:
        assert paid_by_the_dead == items

    cluster.worker("rescuer", **SLOW_PAY)
    _recover(job.name, slot)

    # The killed message itself comes back after the visibility timeout: a recorded duplicate.
    def redelivered() -> bool:
        cluster.restore_unacked(visibility_timeout=10)
        return JobRun.objects.filter(job=job.name, slot=slot, status=Status.DUPLICATE).exists()

    wait_for(redelivered, 30, "the redelivered message to be recorded", every=0.5)
    rows = _slot_rows(job.name, slot)
    owners = [(r.attempt, r.status, r.worker.split("@")[0]) for r in rows if not r.duplicate_of_id]
    assert owners == [(1, Status.LOST, "doomed"), (2, Status.SUCCEEDED, "rescuer")], owners
    assert rows[-1].status == Status.DUPLICATE
    assert pending_items() == 0
    assert settled_items() == items
    chaos_ledger.note(f"{moment}: {paid_by_the_dead}/{items} items paid before the kill")


def test_database_backend_of_a_running_money_job_terminated(cluster, chaos_ledger, chaos_jobs):
    """8: PostgreSQL backend of a running job terminated

    Expected: the first attempt fails on its terminated connection and is retried; the second
    attempt settles every item, once.
    """
    job = chaos_jobs["chaos-db-settlement"]
    items = seed_money(tag="f8", players=20, per_player=10, credits=10)
    cluster.worker("w1", CHAOS_DB_SLEEP="2")
    slot = timezone.now().replace(microsecond=0)
    chaos_ledger.expect(job.name, slot)
    cluster.send(job, slot)
    wait_for(lambda: backends("chaos-w1", query_like="%pg_sleep%"), 30, "the job's backend")
    assert terminate_backends("chaos-w1", query_like="%pg_sleep%") == 1

    wait_for(lambda: _settled(job.name, slot), 60, "the retry to succeed")
    rows = _slot_rows(job.name, slot)
    assert [(r.attempt, r.status) for r in rows] == [
        (1, Status.RETRYING),
        (2, Status.SUCCEEDED),
    ]
    assert "terminat" in rows[0].error or "connection" in rows[0].error, rows[0].error
    assert rows[1].result["settled_items"] == items
    assert pending_items() == 0
