"""The reconciler accounts for every expected slot: lost, re-sent once, or missed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from scheduler.audit import Actor
from scheduler.models import JobRun, JobSchedule
from scheduler.services.reconcile import ledger_reconcile
from scheduler.services.writes import schedule_update, schedules_apply

Status = JobRun.Status
pytestmark = pytest.mark.django_db


@pytest.fixture
def only_sample_noop():
    schedules_apply(actor=Actor.system("tests"), profile="test")
    PeriodicTask.objects.exclude(name="sample-noop").update(enabled=False)
    now = timezone.now()
    JobSchedule.objects.filter(periodic_task__name="sample-noop").update(
        offset_seconds=3, tracked_since=now - timedelta(minutes=12)
    )
    return now


def test_slots_nobody_ran_are_missed_and_the_newest_is_sent_again_once(only_sample_noop):
    now = only_sample_noop
    first = ledger_reconcile(now=now)
    rows = list(JobRun.objects.filter(job="sample-noop").order_by("slot"))

    missed = [r for r in rows if r.status == Status.MISSED]
    queued = [r for r in rows if r.status == Status.QUEUED]
    assert first["missed"] == len(missed) >= 5
    assert len(queued) == 1
    assert queued[0].trigger == "reconciler"
    assert queued[0].slot > missed[-1].slot
    assert all(r.slot.second == 3 for r in rows)
    # older ones are recorded at once, though within their deadline: only the newest would
    # ever be re-sent
    assert any(r.slot > now - timedelta(seconds=300) for r in missed)

    second = ledger_reconcile(now=now)
    assert second == {"lost": 0, "redispatched": 0, "missed": 0}
    assert JobRun.objects.filter(job="sample-noop").count() == len(rows)


def test_a_slot_that_ran_is_not_reported(only_sample_noop):
    now = only_sample_noop
    slot = (now - timedelta(minutes=8)).replace(second=3, microsecond=0)
    JobRun.objects.create(job="sample-noop", slot=slot, status=Status.SUCCEEDED)

    ledger_reconcile(now=now)

    assert JobRun.objects.get(job="sample-noop", slot=slot).status == Status.SUCCEEDED


def test_a_running_row_with_a_stale_heartbeat_is_lost_and_sent_again(only_sample_noop):
    now = only_sample_noop
    slot = (now - timedelta(seconds=50)).replace(microsecond=0)
    JobRun.objects.create(
        job="sample-noop",
        slot=slot,
        status=Status.RUNNING,
        started_at=now - timedelta(minutes=2),
        heartbeat_at=now - timedelta(minutes=2),
    )

    counts = ledger_reconcile(now=now)

    assert counts["lost"] == 1
    attempts = {r.attempt: r.status for r in JobRun.objects.filter(job="sample-noop", slot=slot)}
    assert attempts == {1: Status.LOST, 2: Status.QUEUED}


def test_changing_an_offset_restarts_tracking_so_old_slots_are_not_missed(only_sample_noop):
    schedule = JobSchedule.objects.get(periodic_task__name="sample-noop")
    schedule_update(actor=Actor.system("test"), task=schedule.periodic_task, offset=9)

    counts = ledger_reconcile(now=timezone.now())

    assert counts == {"lost": 0, "redispatched": 0, "missed": 0}
    schedule.refresh_from_db()
    assert schedule.tracked_since > only_sample_noop
