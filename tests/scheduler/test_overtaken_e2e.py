"""Real `celery beat` and `celery worker`: staff changes overtake messages already queued, and a
restart after a 2-minute outage keeps the stagger (issue 16; tests/chaos/test_beat_outage_e2e.py
runs the 3-minute outage with a watchdog, in CI).

Beat sends each slot at its minute boundary with a countdown to its offset, so a change made
between the boundary and the offset meets a message already in the broker. The reconciler is
run from the test (every few seconds, as a watchdog would): it does not depend on where it is
called from. Each test takes a few minutes of wall clock (minute boundaries).
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from scheduler.audit import Actor
from scheduler.cron import Cron
from scheduler.models import JobRun, JobSchedule
from scheduler.services.catchup import _Plans, beat_alive
from scheduler.services.reconcile import ledger_reconcile
from scheduler.services.writes import crontab_for, schedule_update, schedules_apply
from tests.scheduler.conftest import close_other_connections
from tests.scheduler.processes import beat_args, celery_process, worker_args

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
Status = JobRun.Status
JOBS = ("sample-noop", "sample-slow", "sample-sleeper")
ACTOR = Actor(user_id=None, username="ops-test", ip=None, via="cli")
GRACE = "5"  # the reconciler's grace, seconds, here and in beat


@pytest.fixture(autouse=True)
def _short_grace(monkeypatch):
    monkeypatch.setenv("JOB_RECONCILE_GRACE", GRACE)
    _Plans.forget()


def _setup(offsets: dict[str, int], crons: dict[str, str] | None = None) -> None:
    schedules_apply(actor=Actor.system("tests"), profile="test")
    PeriodicTask.objects.exclude(name__in=JOBS).update(enabled=False)
    for name, offset in offsets.items():
        task = PeriodicTask.objects.get(name=name)
        if crons and name in crons:
            task.crontab = crontab_for(Cron.parse(crons[name]))
            task.save()
        JobSchedule.objects.filter(periodic_task=task).update(
            offset_seconds=offset, tracked_since=timezone.now()
        )


def _next_boundary(lead: float) -> datetime:
    now = timezone.now()
    boundary = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return boundary if (boundary - now).total_seconds() >= lead else boundary + timedelta(minutes=1)


def _until(moment: datetime, *, reconcile: bool = False, until=None) -> None:
    """Sleep until `moment` (or `until()` is true); with `reconcile`, run the reconciler every
    5 s meanwhile."""
    while (left := (moment - timezone.now()).total_seconds()) > 0:
        if until is not None and until():
            return
        time.sleep(min(left, 0.5 if until else 5.0))
        if reconcile:
            ledger_reconcile()


def _rows(name: str, since: datetime, until: datetime) -> list[tuple[int, str, str]]:
    """(second after `since`, status, trigger) of the job's rows with a slot in [since, until)."""
    rows = JobRun.objects.filter(job=name, slot__gte=since, slot__lt=until).order_by("slot")
    return [(int((r.slot - since).total_seconds()), r.status, r.trigger) for r in rows]


@pytest.mark.timeout(360)  # up to a minute to the first boundary, then two minutes
def test_disable_and_offset_or_cron_changes_overtake_queued_messages(tmp_path):
    # given three every-minute jobs, beat and a worker
    _setup({"sample-noop": 40, "sample-slow": 45, "sample-sleeper": 20})
    task = lambda name: PeriodicTask.objects.get(name=name)  # noqa: E731
    with (
        celery_process(worker_args(tmp_path), tmp_path / "worker.log"),
        celery_process(beat_args(tmp_path), tmp_path / "beat.log", JOB_RECONCILE_GRACE=GRACE),
    ):
        first = _next_boundary(lead=15)
        second = first + timedelta(minutes=1)
        # when, 10 s after a boundary (every message of it is queued with its countdown), staff
        # disable one, move one's offset earlier across :10 and another's later
        _until(first + timedelta(seconds=10))
        schedule_update(actor=ACTOR, task=task("sample-noop"), enabled=False)
        schedule_update(actor=ACTOR, task=task("sample-slow"), offset=5)
        schedule_update(actor=ACTOR, task=task("sample-sleeper"), offset=50)
        # and 10 s after the next boundary change the cron of the one moved later
        _until(second + timedelta(seconds=10), reconcile=True)
        elsewhere = f"{(second.minute + 30) % 60} * * * *"
        schedule_update(actor=ACTOR, task=task("sample-sleeper"), cron=Cron.parse(elsewhere))
        _until(second + timedelta(seconds=55), reconcile=True)
    close_other_connections()
    ledger_reconcile()

    # then each old message is recorded with its own status and ran nothing; the new offset's
    # slot runs once, from the next minute; no slot is recorded missed or re-sent
    beat_log = (tmp_path / "beat.log").read_text()[-3000:]
    assert _rows("sample-noop", first, second + timedelta(minutes=1)) == [
        (40, Status.SKIPPED_DISABLED, "beat")
    ], beat_log
    assert _rows("sample-slow", first, second + timedelta(minutes=1)) == [
        (45, Status.SUPERSEDED, "beat"),
        (65, Status.SUCCEEDED, "beat"),
    ], beat_log
    assert _rows("sample-sleeper", first, second + timedelta(minutes=1)) == [
        (20, Status.SUPERSEDED, "beat"),  # offset moved later
        (110, Status.SUPERSEDED, "beat"),  # cron changed
    ], beat_log
    superseded = JobRun.objects.get(job="sample-slow", status=Status.SUPERSEDED)
    assert "changed after beat sent it" in superseded.error
    assert not JobRun.objects.filter(status__in=[Status.MISSED, Status.REFUSED]).exists()


# Two minutes: each every-other-minute job loses one slot and the every-minute job two, the
# least that has all three late at the restart (a third minute only made the test longer).
OUTAGE_MINUTES = 2


@pytest.mark.timeout(420)  # up to a minute to the first boundary, then three and a half
def test_a_restart_after_an_outage_keeps_one_start_per_second(tmp_path):
    # given one every-minute job and two every-other-minute jobs at the same second (even and
    # odd minutes: their regular starts never meet), the reconciler with a 5 s grace
    _setup(
        {"sample-noop": 10, "sample-slow": 20, "sample-sleeper": 20},
        crons={"sample-slow": "*/2 * * * *", "sample-sleeper": "1-59/2 * * * *"},
    )
    with celery_process(worker_args(tmp_path), tmp_path / "worker.log"):
        with celery_process(
            beat_args(tmp_path), tmp_path / "beat-1.log", JOB_RECONCILE_GRACE=GRACE
        ):
            up = _next_boundary(lead=12)
            _until(up + timedelta(seconds=35), reconcile=True)
        # when beat is down for two minutes and comes back after every slot of the second
        down_from = up + timedelta(minutes=1)
        back = up + timedelta(minutes=OUTAGE_MINUTES)  # the last boundary beat missed
        _until(back + timedelta(seconds=35))
        restarted = timezone.now()
        with celery_process(
            beat_args(tmp_path), tmp_path / "beat-2.log", JOB_RECONCILE_GRACE=GRACE
        ):
            # (a reconciler that runs before beat's first heartbeat takes beat for down, and
            # then sees no regular start to keep clear of)
            _until(restarted + timedelta(seconds=30), until=beat_alive)
            # the next minute's runs (:10, :20) and the late one (:21), then a reconciler pass
            _until(back + timedelta(minutes=1, seconds=30), reconcile=True)
    close_other_connections()
    ledger_reconcile()

    # then at recovery no two runs started in the same second
    started = JobRun.objects.filter(started_at__gte=restarted).values_list("started_at", flat=True)
    per_second = Counter(moment.replace(microsecond=0) for moment in started)
    assert per_second, "nothing ran after the restart"
    assert max(per_second.values()) == 1, per_second
    # and every slot of the outage is accounted exactly once: run (late) or missed
    log = (tmp_path / "beat-2.log").read_text()[-3000:]
    for name, offset, cron in (
        ("sample-noop", 10, "* * * * *"),
        ("sample-slow", 20, "*/2 * * * *"),
        ("sample-sleeper", 20, "1-59/2 * * * *"),
    ):
        slots = [
            b + timedelta(seconds=offset)
            for b in Cron.parse(cron).fire_times(down_from, back + timedelta(minutes=1))
        ]
        for slot in slots:
            owners = JobRun.objects.filter(JobRun.SLOT_OWNERS, job=name, slot=slot)
            statuses = [r.status for r in owners]
            assert statuses in ([Status.MISSED], [Status.SUCCEEDED]), (name, slot, statuses, log)
    # the late runs sent at the restart started one per second, none with a regular start: a job
    # whose own second is its own next run soon after the restart, the one whose own second :20
    # is where the other one's regular run starts at :21
    late = JobRun.objects.filter(started_at__gte=restarted, lateness_ms__gt=5000)
    late = {run.job: run for run in late}
    next_minute = back + timedelta(minutes=1)
    for name, cron in (("sample-slow", "*/2 * * * *"), ("sample-sleeper", "1-59/2 * * * *")):
        if Cron.parse(cron).fires_at(next_minute):  # its own next run at :20
            assert late[name].started_at < restarted + timedelta(seconds=15), late
        else:
            # its second is :21 (a start lands up to ~1 s late on a loaded 2-core machine)
            target = next_minute + timedelta(seconds=21)
            assert target <= late[name].started_at < target + timedelta(seconds=2), late
    assert late["sample-noop"].started_at < restarted + timedelta(seconds=15), late
