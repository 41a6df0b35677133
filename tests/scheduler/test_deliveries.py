"""What a worker trusts: a job message is checked against the schedule and the ledger first.

Real PostgreSQL; the messages are the Delivery the task builds from a message's kwargs. The same
refusals with a real worker, broker, Flower and money: tests/integration/test_forged_deliveries.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from scheduler.cron import Cron
from scheduler.models import JobRun, JobSchedule
from scheduler.registry import RetryPolicy
from scheduler.services.deliveries import (
    FUTURE_TOLERANCE,
    delivery_admit,
    delivery_refusal,
    delivery_refuse,
    delivery_verdict,
)
from scheduler.services.dispatch import job_dispatch
from scheduler.services.reconcile import ledger_reconcile
from scheduler.services.runs import Delivery, job_execute
from scheduler.services.writes import crontab_for
from scheduler.tasks import _delivery

Status = JobRun.Status
pytestmark = pytest.mark.django_db
NOW = datetime(2026, 3, 4, 12, 30, 17, 250000, tzinfo=UTC)


def _schedule(job, cron: str = "*/5 * * * *", offset: int = 7) -> PeriodicTask:
    task = PeriodicTask.objects.create(
        name=job.name, task=job.task, crontab=crontab_for(Cron.parse(cron))
    )
    JobSchedule.objects.create(
        periodic_task=task, offset_seconds=offset, tracked_since=NOW - timedelta(days=1)
    )
    return task


def _beat(job, slot: datetime, **extra) -> Delivery:
    return Delivery(job=job, slot=slot, trigger="beat", task_id="beat-1", worker="w1", **extra)


def test_a_beat_message_must_name_a_fire_time_plus_the_offset(register_job):
    job = register_job("beat-slots")
    _schedule(job, "*/5 * * * *", offset=7)
    due = datetime(2026, 3, 4, 12, 30, 7, tzinfo=UTC)

    assert delivery_refusal(_beat(job, due), now=NOW) is None
    for wrong in (due + timedelta(minutes=1), due - timedelta(seconds=7), due.replace(second=8)):
        refusal = delivery_refusal(_beat(job, wrong), now=NOW + timedelta(hours=1))
        assert refusal is not None
        assert "is not a fire time plus offset" in refusal


def test_a_beat_message_for_a_real_slot_still_to_come_is_refused(register_job):
    job = register_job("beat-future")
    _schedule(job, "*/5 * * * *", offset=7)
    next_slot = datetime(2026, 3, 4, 12, 35, 7, tzinfo=UTC)  # a real fire time, 5 minutes ahead

    refusal = delivery_refusal(_beat(job, next_slot), now=NOW)

    assert "lies in the future (290 s" in refusal
    # a slot a little ahead of the worker's clock (skew between hosts) is still accepted
    assert delivery_refusal(_beat(job, next_slot), now=next_slot - FUTURE_TOLERANCE) is None


def test_a_beat_message_for_a_disabled_schedule_is_skipped_and_for_another_job_refused(
    register_job,
):
    job = register_job("beat-disabled")
    task = _schedule(job, "0 0 * * *", offset=50)
    midnight = datetime(2026, 3, 4, 0, 0, 50, tzinfo=UTC)
    assert delivery_refusal(_beat(job, midnight), now=NOW) is None

    PeriodicTask.objects.filter(pk=task.pk).update(enabled=False)

    assert delivery_verdict(_beat(job, midnight), now=NOW).status == Status.SKIPPED_DISABLED
    assert "not a fire time" in delivery_refusal(_beat(register_job("other"), midnight), now=NOW)


@pytest.mark.parametrize(
    "extra", [{"user_id": 1}, {"reason": "credit me"}, {"run_id": 5}, {"attempt": 2}]
)
def test_a_beat_message_names_no_run_user_reason_or_later_attempt(register_job, extra):
    job = register_job("beat-extra")
    _schedule(job)

    refusal = delivery_refusal(
        _beat(job, datetime(2026, 3, 4, 12, 30, 7, tzinfo=UTC), **extra), now=NOW
    )

    assert refusal is not None


def test_a_dispatched_message_must_name_its_ledger_row(
    register_job, django_capture_on_commit_callbacks
):
    job = register_job("dispatched")
    slot = timezone.now().replace(microsecond=0)
    with django_capture_on_commit_callbacks(execute=False):  # no broker needed: no send
        run = job_dispatch(job=job, slot=slot, trigger="api", user_id=None, reason="by ops")
    now = timezone.now()

    def manual(**extra) -> Delivery:
        fields = {"slot": slot, "trigger": "api", "task_id": run.task_id, "run_id": run.pk}
        return Delivery(job=job, worker="w1", **{**fields, "reason": "by ops", **extra})

    assert delivery_refusal(manual(), now=now) is None
    assert delivery_refusal(manual(trigger="retry", run_id=None, attempt=2), now=now) is None
    for forged in (
        manual(task_id="made-up"),
        manual(run_id=run.pk + 1000),
        manual(slot=slot - timedelta(minutes=1)),
        manual(reason="someone else"),
        manual(task_id=""),
    ):
        assert delivery_refusal(forged, now=now) is not None, forged
    assert "is not one of" in delivery_refusal(manual(trigger="evil"), now=now)


def test_a_forged_future_slot_is_refused_and_leaves_the_slot_to_its_real_run(register_job):
    job = register_job("forged-future")
    _schedule(job, "* * * * *", offset=0)
    real = timezone.now().replace(second=0, microsecond=0) + timedelta(minutes=2)

    refused = delivery_admit(_beat(job, real))

    assert refused.status == Status.REFUSED
    assert refused.slot == real
    assert "lies in the future" in refused.error
    # when the slot comes, beat's message runs it: the refused row claimed nothing
    beat = Delivery(job=job, slot=real, trigger="beat", task_id="beat-2", worker="w1")
    later = job_execute(beat).run
    assert later.status == Status.SUCCEEDED
    assert (later.attempt, later.duplicate_of_id) == (1, None)


def test_a_refused_row_does_not_account_for_a_slot_the_reconciler_expects(register_job):
    job = register_job("forged-past", starting_deadline=600)
    task = _schedule(job, "* * * * *", offset=0)
    now = timezone.now()
    slot = now.replace(second=0, microsecond=0) - timedelta(minutes=1)
    JobSchedule.objects.filter(periodic_task=task).update(tracked_since=slot - timedelta(seconds=1))
    # a message with the real slot's time but a manual trigger and no ledger row
    forged = Delivery(job=job, slot=slot, trigger="manual", task_id="forged", worker="w1")
    assert delivery_admit(forged).status == Status.REFUSED

    ledger_reconcile(now=slot + timedelta(seconds=100))  # past the grace of 90 s

    owners = JobRun.objects.filter(JobRun.SLOT_OWNERS, job=job.name, slot=slot)
    assert [(r.status, r.trigger) for r in owners] == [(Status.QUEUED, "reconciler")]


@pytest.mark.parametrize(
    ("kwargs", "said"),
    [
        ({}, "slot None is not an ISO 8601"),
        ({"slot": "next monday"}, "slot 'next monday'"),
        ({"slot": "2026-03-04T12:00:00"}, "with a timezone"),
        ({"slot": "2026-03-04T12:00:00+00:00", "attempt": "2"}, "attempt '2' is not a int"),
        ({"slot": "2026-03-04T12:00:00+00:00", "run_id": [1]}, "run_id [1] is not a int"),
        ({"slot": "2026-03-04T12:00:00+00:00", "user_id": True}, "user_id True"),
        ({"slot": "2026-03-04T12:00:00+00:00", "run_id": 2**64}, "run_id 18446744073709551616"),
        ({"slot": "2026-03-04T12:00:00+00:00", "attempt": 0}, "attempt 0"),
        ({"slot": "0001-01-01T00:00:00+14:00"}, "out of range"),
        ({"slot": "9999-12-31T23:59:59-12:00"}, "out of range"),
        ({"slot": "1999-12-31T23:59:59+00:00"}, "outside the years 2000-9998"),
    ],
)
def test_a_malformed_message_is_said_to_be(register_job, kwargs, said):
    delivery, malformed = _delivery(register_job("malformed"), kwargs, task_id="t", worker="w")

    assert said in malformed
    # and what could be read is recorded as refused
    assert delivery_refuse(delivery, error=malformed).status == Status.REFUSED


def test_the_service_never_gets_a_moment_past_the_wall_clock(register_job):
    from tests.scheduler.sample_jobs import CALLS

    job = register_job("clamped")
    ahead = timezone.now() + FUTURE_TOLERANCE

    job_execute(Delivery(job=job, slot=ahead, trigger="api", task_id="t", worker="w1"))

    assert len(CALLS) == 1
    assert CALLS[0] < ahead


def test_an_expired_message_is_recorded_expired_only_when_it_named_a_due_slot(register_job):
    from types import SimpleNamespace

    from scheduler.tasks import _record_expired

    job = register_job("expiring")
    _schedule(job, "* * * * *", offset=0)
    past = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=1)
    future = past + timedelta(minutes=3)

    def expire(task_id: str, slot: datetime) -> JobRun:
        kwargs = {"slot": slot.isoformat(), "trigger": "beat"}
        request = SimpleNamespace(task=job.task, id=task_id, kwargs=kwargs, hostname="w1")
        _record_expired(request=request, expired=True)
        return JobRun.objects.get(task_id=task_id)

    assert expire("real", past).status == Status.EXPIRED
    forged = expire("forged", future)  # an expiry set in the past, on a slot still to come
    assert forged.status == Status.REFUSED
    assert not JobRun.objects.filter(JobRun.SLOT_OWNERS, job=job.name, slot=future).exists()


def test_a_beat_message_may_name_a_fire_time_of_any_enabled_schedule_of_the_job(register_job):
    job = register_job("two-schedules")
    _schedule(job, "0 0 * * *", offset=50)
    extra = PeriodicTask.objects.create(
        name="two-schedules, half past",
        task=job.task,
        crontab=crontab_for(Cron.parse("30 * * * *")),
    )
    JobSchedule.objects.create(periodic_task=extra, offset_seconds=9, tracked_since=NOW)

    assert (
        delivery_refusal(_beat(job, datetime(2026, 3, 4, 12, 30, 9, tzinfo=UTC)), now=NOW) is None
    )
    assert delivery_refusal(_beat(job, datetime(2026, 3, 4, 0, 0, 50, tzinfo=UTC)), now=NOW) is None
    assert delivery_refusal(_beat(job, datetime(2026, 3, 4, 0, 0, 9, tzinfo=UTC)), now=NOW)


# The decision table of scheduler.services.deliveries for beat messages overtaken by a change.
# The job is every minute at :20; beat sent the 12:30 boundary's message with a countdown of 20 s.
BOUNDARY = datetime(2026, 3, 4, 12, 30, tzinfo=UTC)
OLD_SLOT = BOUNDARY + timedelta(seconds=20)


def _overtaken(register_job, name: str, *, enabled: bool = True, **change) -> str | None:
    """The status of beat's OLD_SLOT message after `change` (cron, offset, changed_at)."""
    job = register_job(name)
    task = _schedule(job, "* * * * *", offset=20)
    changed_at = change.get("changed_at", BOUNDARY + timedelta(seconds=10))
    if "cron" in change:
        task.crontab = crontab_for(Cron.parse(change["cron"]))
    task.enabled = enabled
    task.save()
    JobSchedule.objects.filter(periodic_task=task).update(
        offset_seconds=change.get("offset", 20), tracked_since=changed_at
    )
    verdict = delivery_verdict(_beat(job, OLD_SLOT), now=OLD_SLOT + timedelta(seconds=1))
    return None if verdict is None else verdict.status


@pytest.mark.parametrize(
    ("change", "enabled", "status"),
    [
        # nothing changed: the message runs
        ({"changed_at": BOUNDARY - timedelta(hours=1)}, True, None),
        # disabled between the boundary and the offset: skipped, whatever else changed
        ({}, False, Status.SKIPPED_DISABLED),
        ({"offset": 40}, False, Status.SKIPPED_DISABLED),
        # disabled long ago, and its old slot still fires: skipped (the job is off)
        ({"changed_at": BOUNDARY - timedelta(days=3)}, False, Status.SKIPPED_DISABLED),
        # offset moved later or earlier, cron changed, after beat sent the message: superseded
        ({"offset": 45}, True, Status.SUPERSEDED),
        ({"offset": 5}, True, Status.SUPERSEDED),
        ({"cron": "*/7 * * * *"}, True, Status.SUPERSEDED),
        # a change just before the boundary (beat may fire a few ms early): superseded still
        ({"offset": 45, "changed_at": BOUNDARY - timedelta(seconds=1)}, True, Status.SUPERSEDED),
        # a slot that was no fire time before the change either: refused
        ({"offset": 45, "changed_at": BOUNDARY - timedelta(minutes=5)}, True, Status.REFUSED),
        # a change after the message would have expired did not overtake it: refused
        ({"offset": 45, "changed_at": BOUNDARY + timedelta(hours=2)}, True, Status.REFUSED),
    ],
    ids=[
        "unchanged",
        "disabled",
        "disabled-and-moved",
        "disabled-long-ago",
        "offset-later",
        "offset-earlier",
        "cron",
        "changed-just-before-boundary",
        "changed-before-the-slot-was-sent",
        "changed-after-expiry",
    ],
)
def test_a_beat_message_overtaken_by_a_change_gets_its_own_status(
    register_job, change, enabled, status
):
    assert _overtaken(register_job, "overtaken", enabled=enabled, **change) == status


def test_a_message_turned_away_by_a_change_runs_nothing_and_claims_no_slot(register_job):
    job = register_job("moved-later")
    task = _schedule(job, "* * * * *", offset=20)
    now = timezone.now()
    boundary = now.replace(second=0, microsecond=0) - timedelta(minutes=1)
    # given beat sent the :20 message at the boundary, then staff moved the offset to :20 -> :45
    JobSchedule.objects.filter(periodic_task=task).update(
        offset_seconds=45, tracked_since=boundary + timedelta(seconds=10)
    )
    old = boundary + timedelta(seconds=20)

    # when the old message is delivered
    row = delivery_admit(_beat(job, old))

    # then it is superseded, with a reason, ran nothing and claims no slot
    assert row.status == Status.SUPERSEDED
    assert "changed after beat sent it" in row.error
    assert not JobRun.objects.filter(JobRun.SLOT_OWNERS, job=job.name).exists()
    from tests.scheduler.sample_jobs import CALLS

    assert CALLS == []
    # and the reconciler expects neither the old slot nor the new one of that minute (its
    # boundary came before the change: beat never sent it), so nothing is missed
    counts = ledger_reconcile(now=boundary + timedelta(seconds=45 + 100))
    assert counts == {"lost": 0, "redispatched": 0, "missed": 0}
    assert list(JobRun.objects.filter(job=job.name).values_list("status", flat=True)) == [
        Status.SUPERSEDED
    ]
    # the next minute's new slot is expected again
    counts = ledger_reconcile(now=boundary + timedelta(minutes=1, seconds=45 + 100))
    assert counts["redispatched"] + counts["missed"] == 1


def test_schedule_runs_are_skipped_once_disabled_and_staff_runs_are_not(
    register_job, django_capture_on_commit_callbacks
):
    # given a job with a schedule, and runs of it queued by the reconciler and by staff
    job = register_job("disabled-resend")
    task = _schedule(job, "* * * * *", offset=0)
    slot = timezone.now().replace(microsecond=0)
    with django_capture_on_commit_callbacks(execute=False):  # no broker needed: no send
        resent = job_dispatch(job=job, slot=slot, trigger="reconciler", reason="re-sent")
        asked = job_dispatch(
            job=job, slot=slot + timedelta(seconds=1), trigger="admin", reason="by ops"
        )

    def delivery(run: JobRun, **extra) -> Delivery:
        fields = {"slot": run.slot, "trigger": run.trigger, "task_id": run.task_id}
        return Delivery(job=job, worker="w1", **{**fields, "reason": run.reason, **extra})

    now = timezone.now()
    assert delivery_verdict(delivery(resent, run_id=resent.pk), now=now) is None

    # when staff disable the schedule before they run
    task.enabled = False
    task.save()

    # then the re-send and a retry of it are skipped; staff's run (and its retry) still runs
    verdict = delivery_verdict(delivery(resent, run_id=resent.pk), now=now)
    assert verdict.status == Status.SKIPPED_DISABLED
    assert f"schedule {job.name!r} is disabled" in verdict.error
    retry = delivery(resent, trigger="retry", attempt=2, reason="")
    assert delivery_verdict(retry, now=now).status == Status.SKIPPED_DISABLED
    assert delivery_verdict(delivery(asked, run_id=asked.pk), now=now) is None
    assert delivery_verdict(delivery(asked, trigger="retry", attempt=2, reason=""), now=now) is None
    # (a re-send after staff's run was lost is still staff's: its slot's first attempt says so)
    lost_resend = delivery(asked, trigger="reconciler", attempt=2, reason="", run_id=None)
    assert delivery_verdict(lost_resend, now=now) is None

    # and the re-send's own queued row records the skip (the reconciler will not call it missed)
    row = delivery_admit(delivery(resent, run_id=resent.pk))
    assert (row.pk, row.status) == (resent.pk, Status.SKIPPED_DISABLED)
    assert delivery_admit(delivery(resent, run_id=resent.pk)).status == Status.SKIPPED_DISABLED
    assert JobRun.objects.filter(pk=resent.pk).count() == 1

    # and a schedule removed altogether asks for nothing either
    task.delete()
    other = delivery(asked, trigger="reconciler", reason="", run_id=None)
    assert "has no schedule any more" in delivery_verdict(other, now=now).error


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_queued_resend_and_a_retry_of_a_disabled_schedule_run_nothing_on_a_worker(
    register_job,
):
    """A real worker thread: the reconciler's re-send waits for its own second (a countdown),
    a beat-started run waits for its retry; staff disable the schedule meanwhile."""
    from tests.chaos.harness import wait_for
    from tests.integration.conftest import running_worker
    from tests.scheduler import sample_jobs

    flaky = register_job(
        "disabled-retry",
        sample_jobs.flaky,
        retry=RetryPolicy(retry_on=(OperationalError,), max_retries=2, backoff_base=4, jitter=0),
    )
    noop = register_job("disabled-noop")
    tasks = {job.name: _schedule(job, "* * * * *", offset=0) for job in (flaky, noop)}
    sample_jobs.FAILURES_LEFT["flaky"] = 1
    now = timezone.now().replace(microsecond=0)
    with running_worker():
        # given a re-send that starts in 4 s and a run whose first attempt fails (retry in 4 s)
        resent = job_dispatch(
            job=noop,
            slot=now,
            trigger="reconciler",
            reason="re-sent",
            start_at=now + timedelta(seconds=4),
        )
        failing = job_dispatch(job=flaky, slot=now, trigger="reconciler", reason="re-sent")
        wait_for(
            lambda: JobRun.objects.filter(pk=failing.pk, status=Status.RETRYING).exists(),
            15,
            "the first attempt to fail",
        )
        # when staff disable both schedules before either message runs
        for task in tasks.values():
            task.enabled = False
            task.save()
        # then each is recorded skipped_disabled and runs nothing
        settled = JobRun.objects.filter(status=Status.SKIPPED_DISABLED)
        wait_for(lambda: settled.count() == 2, 20, "both deliveries to be skipped")
        # and a run staff ask for now still runs
        asked = job_dispatch(
            job=noop, slot=timezone.now().replace(microsecond=0), trigger="admin", reason="ops"
        )
        wait_for(
            lambda: JobRun.objects.filter(pk=asked.pk, status=Status.SUCCEEDED).exists(),
            15,
            "staff's run",
        )

    assert JobRun.objects.get(pk=resent.pk).status == Status.SKIPPED_DISABLED
    assert [
        (r.attempt, r.status, r.trigger)
        for r in JobRun.objects.filter(job=flaky.name).order_by("attempt")
    ] == [(1, Status.RETRYING, "reconciler"), (2, Status.SKIPPED_DISABLED, "retry")]
    assert len(sample_jobs.CALLS) == 1  # staff's run only
    assert not JobRun.objects.filter(status=Status.MISSED).exists()
    ledger_reconcile()
    assert not JobRun.objects.filter(status=Status.MISSED).exists()
