"""Fault 5: two beat processes for three minutes of the test profile (every job every minute, at its
own offset): every slot runs once, and the other beat's send of it is a recorded duplicate.

tests/scheduler/test_two_beats.py shows one slot of one job; this is every job of the profile
(the default table, the scheduler's sample jobs and the chaos jobs) over three minutes.
"""

from __future__ import annotations

import statistics
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from scheduler.audit import Actor
from scheduler.models import JobRun, JobSchedule
from scheduler.services.schedules import enabled_plans
from scheduler.services.writes import schedules_apply
from tests.chaos.harness import wait_for
from tests.chaos.seed import pending_items, seed_money, settled_items

Status = JobRun.Status
pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(420)]
WINDOW = timedelta(minutes=3)


def test_two_beats_for_three_minutes_of_the_test_profile(cluster, chaos_ledger, chaos_jobs):
    """5: two beats for three minutes of the test profile

    Expected: every job's three slots run once, each with the other beat's send recorded as a
    `duplicate`; every item paid once; both beats stay up.
    """
    schedules_apply(actor=Actor.system("tests"), profile="test")
    # The window starts at the first boundary both beats are up for. (Not earlier, with a
    # catch-up of the current minute at their start: the first beat to send records last_run_at
    # of that job at once, and a second beat that loads its schedule after that does not send it.)
    PeriodicTask.objects.update(last_run_at=timezone.now())
    JobSchedule.objects.update(
        tracked_since=timezone.now() + timedelta(hours=1), reconciled_until=None
    )
    items = seed_money(tag="f5", players=20, per_player=10, credits=10)
    worker = cluster.worker("w1", ready=False)
    beats = [cluster.beat("beat-a"), cluster.beat("beat-b")]
    worker.wait_log(" ready.", timeout=60)
    for beat in beats:
        beat.wait_loaded(timeout=60)
    # Both beats have ticked by now: every boundary from the next one on is sent by each of them.
    start = timezone.now().replace(second=0, microsecond=0) + timedelta(minutes=1)
    end = start + WINDOW
    JobSchedule.objects.update(tracked_since=start - timedelta(seconds=1))
    plans = enabled_plans()
    expected = {
        (plan.name, boundary + timedelta(seconds=plan.offset))
        for plan in plans
        for boundary in plan.cron.fire_times(
            start - timedelta(seconds=plan.offset), end - timedelta(seconds=plan.offset)
        )
    }
    for job, slot in expected:
        chaos_ledger.expect(job, slot)
    assert len(expected) == 3 * len(plans)  # every job every minute: three slots each

    time.sleep(max(0.0, (end - timezone.now()).total_seconds()))
    for beat in beats:
        assert beat.alive

    def window_rows() -> list[JobRun]:
        return list(JobRun.objects.filter(slot__gte=start, slot__lt=end))

    def unsettled() -> list[str]:
        """Slots of the window without both beats' sends, or with a run not finished."""
        by_key: dict[tuple[str, object], list[JobRun]] = {}
        for row in window_rows():
            by_key.setdefault((row.job, row.slot), []).append(row)
        short = []
        for key in sorted(expected):
            rows = by_key.get(key, [])
            if len(rows) < 2 or any(r.status in (Status.QUEUED, Status.RUNNING) for r in rows):
                found = [(r.status, r.trigger) for r in rows]
                short.append(f"{key[0]} @ {key[1]:%H:%M:%S}: {found}")
        return short

    try:
        wait_for(lambda: not unsettled(), 60, "both beats' sends of every slot", every=1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {unsettled()}") from None
    rows = window_rows()
    by_slot: dict[tuple[str, object], list[JobRun]] = {}
    for row in rows:
        by_slot.setdefault((row.job, row.slot), []).append(row)
    assert set(by_slot) == expected, set(by_slot) ^ expected
    for key, slot_rows in by_slot.items():
        owners = [(r.attempt, r.status) for r in slot_rows if not r.duplicate_of_id]
        assert owners == [(1, Status.SUCCEEDED)], (key, owners)
        others = [r.status for r in slot_rows if r.duplicate_of_id]
        assert others, f"{key}: only one beat's send arrived"
        assert set(others) == {Status.DUPLICATE}, (key, others)
    assert pending_items() == 0
    assert settled_items() == items
    lateness = sorted(r.lateness_ms for r in rows if r.status == Status.SUCCEEDED)
    duplicates = sum(r.status == Status.DUPLICATE for r in rows)
    late_owners = sum(r.trigger != "beat" for r in rows if r.status == Status.SUCCEEDED)
    chaos_ledger.note(
        f"{len(plans)} jobs x 3 minutes; {duplicates} second sends recorded duplicate; "
        f"{late_owners} slots run through the reconciler's re-send; "
        f"lateness p50 {statistics.median(lateness):.0f} ms, max {lateness[-1]} ms"
    )
