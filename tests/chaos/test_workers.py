"""Workers holding countdown messages: a Redis restart under them, a deploy's SIGTERM, and three
triggers of one slot in the same second."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from scheduler.audit import Actor
from scheduler.models import JobRun, JobSchedule
from scheduler.services.dispatch import job_trigger
from scheduler.services.reconcile import ledger_reconcile
from scheduler.services.writes import schedules_apply
from tests.chaos.harness import wait_for
from tests.chaos.seed import pending_items, seed_money

Status = JobRun.Status
pytestmark = [pytest.mark.chaos, pytest.mark.timeout(180)]


def _rows(job: str, slot: datetime) -> list[JobRun]:
    return list(JobRun.objects.filter(job=job, slot=slot).order_by("attempt", "id"))


def _done(job: str, slot: datetime) -> bool:
    rows = _rows(job, slot)
    return any(r.status == Status.SUCCEEDED for r in rows) and not any(
        r.status in (Status.QUEUED, Status.RUNNING) for r in rows
    )


def _scheduled_slot(job: str, lead: float) -> datetime:
    """Make `job`'s every-minute schedule have a slot `lead` seconds from now (by choosing its
    offset), expected from just before it: the reconciler accounts for that slot."""
    slot = (timezone.now() + timedelta(seconds=lead)).replace(microsecond=0)
    schedules_apply(actor=Actor.system("tests"), profile="test")
    PeriodicTask.objects.exclude(name=job).update(enabled=False)
    JobSchedule.objects.filter(periodic_task__name=job).update(
        offset_seconds=slot.second,
        # Tracked from just before the slot's minute boundary: the reconciler expects the slots of
        # boundaries at or after `tracked_since` (a schedule changed within a minute restarts
        # tracking at the next boundary).
        tracked_since=slot.replace(second=0) - timedelta(seconds=3),
        reconciled_until=None,
    )
    return slot


def test_redis_restarted_while_a_worker_holds_a_countdown_task(cluster, chaos_ledger, chaos_jobs):
    """9: Redis restarted (no persistence) while a worker holds a countdown task

    Expected: the worker survives the restart (celery 5.6.3, kombu 5.6.2); the slot runs once
    (the held message is lost with Redis's memory; the watchdog's reconciler re-sends the slot).
    """
    job = chaos_jobs["chaos-tock"]
    worker = cluster.worker("w1")
    slot = _scheduled_slot(job.name, lead=12)
    chaos_ledger.expect(job.name, slot)
    cluster.send(job, slot, countdown=(slot - timezone.now()).total_seconds())
    worker.wait_log(f"Task {job.name}[", timeout=10)  # logged by job name
    assert cluster.unacked() == 1  # held by the worker, unacknowledged, until its ETA

    cluster.stop_redis()
    time.sleep(1)
    cluster.start_redis()  # empty: the message and its unacked copy are gone
    worker.wait_log("Connected to redis", count=2, timeout=30)

    def accounted() -> bool:
        ledger_reconcile()  # beat's reconciler: re-sends the newest slot with no run
        return _done(job.name, slot)

    # The re-send keeps the stagger: it starts at the next free second that is the job's own or,
    # for an every-minute job, the soonest one no other start takes (scheduler.services.catchup).
    wait_for(accounted, 150, "the slot to run", every=0.5)
    time.sleep(2)  # a second run of the slot would show up now
    rows = _rows(job.name, slot)
    assert [r.status for r in rows if not r.duplicate_of_id] == [Status.SUCCEEDED]
    assert worker.alive, "the worker must survive the Redis restart (celery 5.6.3, kombu 5.6.2)"
    run = rows[0]
    chaos_ledger.note(f"slot ran via {run.trigger}, {run.lateness_ms} ms late")


def test_sigterm_while_countdowns_are_held_and_a_job_runs(cluster, chaos_ledger, chaos_jobs):
    """12: SIGTERM (deploy) while countdown tasks are held and a job runs

    Expected: warm shutdown: the old worker finishes the running settlement (every item once)
    and exits 0; the held countdown tasks run once on the new worker, under 3 s late.
    """
    settlement, tick, tock = (
        chaos_jobs[n] for n in ("chaos-settlement", "chaos-tick", "chaos-tock")
    )
    items = seed_money(tag="f12", players=10, per_player=5, credits=3)
    old = cluster.worker("old", CHAOS_SLEEP_AFTER="4")
    now = timezone.now().replace(microsecond=0)
    # The new worker must be up before the held slot: 8-15 s on a loaded machine.
    running_slot, held_slot = now, now + timedelta(seconds=25)
    chaos_ledger.expect(settlement.name, running_slot)
    chaos_ledger.expect(tick.name, held_slot)
    chaos_ledger.expect(tock.name, held_slot)
    cluster.send(settlement, running_slot)
    for job in (tick, tock):
        cluster.send(job, held_slot, countdown=(held_slot - timezone.now()).total_seconds())
    old.wait_log(" received", count=3, timeout=10)
    new = cluster.worker("new", ready=False)  # a rolling deploy: the new worker is up first
    wait_for(lambda: pending_items() == 0, 30, "the running settlement to pay")
    new.wait_log(" ready.", timeout=60)
    assert timezone.now() < held_slot, "the new worker took too long to start: nothing was held"
    assert old.term(timeout=30) == 0  # warm shutdown: waits for the running job

    wait_for(lambda: _done(tick.name, held_slot) and _done(tock.name, held_slot), 40, "held runs")
    time.sleep(1)
    paid = _rows(settlement.name, running_slot)
    assert [(r.status, r.worker.split("@")[0]) for r in paid] == [(Status.SUCCEEDED, "old")]
    assert paid[0].result["settled_items"] == items
    for job in (tick, tock):
        rows = _rows(job.name, held_slot)
        assert [(r.status, r.worker.split("@")[0]) for r in rows] == [(Status.SUCCEEDED, "new")]
        assert rows[0].lateness_ms < 3000, rows[0].lateness_ms
    assert new.alive
    chaos_ledger.note(
        "held tasks ran on the new worker, "
        + ", ".join(f"{_rows(j.name, held_slot)[0].lateness_ms} ms late" for j in (tick, tock))
    )


def test_manual_admin_and_scheduled_runs_in_the_same_second(cluster, chaos_ledger, chaos_jobs):
    """6: manual (CLI), admin "run now" and the scheduled run of one slot in the same second

    Expected: one of the three runs the slot; the two others are `duplicate` rows pointing at
    it, each with a reason; the admin's row names the staff user and "admin: run now".
    """
    job = chaos_jobs["chaos-tick"]
    staff = get_user_model().objects.create_user("chaos-admin", is_staff=True)
    cluster.worker("w1", CHAOS_SLEEP="1")
    # Start early in a second so all three asks land in it.
    wait_for(lambda: timezone.now().microsecond < 200_000, 2, "the start of a second", every=0.01)
    call_command("runjob", job.name)
    admin = job_trigger(job=job, trigger="admin", user_id=staff.pk, reason="admin: run now")
    slot = admin.slot
    cluster.send(job, slot)  # what beat sends for this second
    chaos_ledger.expect(job.name, slot)

    wait_for(lambda: len(_rows(job.name, slot)) == 3 and _done(job.name, slot), 30, "3 rows")
    rows = _rows(job.name, slot)
    ran = [r for r in rows if r.status == Status.SUCCEEDED]
    assert len(ran) == 1, [(r.trigger, r.status) for r in rows]
    others = [r for r in rows if r.status == Status.DUPLICATE]
    assert len(others) == 2
    assert all(r.duplicate_of_id == ran[0].pk for r in others)
    admin_row = next(r for r in rows if r.trigger == "admin")
    assert admin_row.user_id == staff.pk
    assert "admin: run now" in admin_row.reason
    assert all(r.reason for r in others), "a duplicate says why it did not run"
    chaos_ledger.note(
        "; ".join(f"{r.trigger}: {r.status} ({r.reason or 'ran'})" for r in rows)[:200]
    )
