"""A worker remembers each job's own schedule, and the claim statement re-checks what it
remembered (scheduler.own_schedule): a remembered row saves a round trip per run, and never
decides alone. The task is applied in this process, as a worker's pool would run it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from scheduler.cron import Cron
from scheduler.models import JobRun, JobSchedule
from scheduler.own_schedule import GuardFailed, own_schedule_forget, own_schedule_read
from scheduler.services.deliveries import delivery_guard
from scheduler.services.runs import Delivery, job_execute
from scheduler.services.writes import crontab_for
from scheduler.tasks import app

Status = JobRun.Status
pytestmark = pytest.mark.django_db(transaction=True)  # the task commits, as on a worker


@pytest.fixture(autouse=True)
def _nothing_remembered():
    own_schedule_forget()
    yield
    own_schedule_forget()


@pytest.fixture
def job(register_job):
    job = register_job("guarded", starting_deadline=3600)  # slots minutes ago still run
    task = PeriodicTask.objects.create(
        name=job.name, task=job.task, crontab=crontab_for(Cron.parse("* * * * *"))
    )
    JobSchedule.objects.create(
        periodic_task=task, offset_seconds=0, tracked_since=timezone.now() - timedelta(days=1)
    )
    return job


@pytest.fixture
def minute():
    """Slots counted back from one boundary per test (a boundary passing mid-test must not make
    two of a test's slots the same)."""
    boundary = timezone.now().replace(second=0, microsecond=0)
    return lambda ago: boundary - timedelta(minutes=ago)


def _beat(job, slot, guard=None) -> Delivery:
    task_id = f"beat-{slot:%H%M}"
    return Delivery(job=job, slot=slot, trigger="beat", task_id=task_id, worker="w1", guard=guard)


def _apply(job, slot) -> dict:
    """The job's task as a worker runs it, for beat's message of `slot`."""
    task_id = f"beat-{slot:%H%M}"
    result = app.tasks[job.task].apply(kwargs={"slot": slot.isoformat()}, task_id=task_id)
    return result.get()


def test_a_remembered_schedule_admits_a_beat_message_without_asking(job, minute):
    slot = minute(2)
    assert delivery_guard(_beat(job, slot), now=timezone.now()) is None  # nothing read yet

    assert _apply(job, minute(3))["status"] == Status.SUCCEEDED  # reads and remembers it

    guard = delivery_guard(_beat(job, slot), now=timezone.now())
    assert guard is not None
    assert guard.enabled
    assert _apply(job, slot)["status"] == Status.SUCCEEDED
    # a slot the schedule does not fire at is never admitted from memory
    assert delivery_guard(_beat(job, slot + timedelta(seconds=5)), now=timezone.now()) is None


@pytest.mark.parametrize(
    "change",
    [
        lambda task, slot: PeriodicTask.objects.filter(pk=task.pk).update(enabled=False),
        lambda task, slot: JobSchedule.objects.filter(periodic_task=task).update(offset_seconds=30),
        lambda task, slot: PeriodicTask.objects.filter(pk=task.pk).update(
            crontab=crontab_for(Cron.parse(f"{(slot.minute + 30) % 60} * * * *"))
        ),
    ],
    ids=["disabled", "offset moved", "cron changed"],
)
def test_a_schedule_changed_behind_the_workers_back_is_not_run_from_memory(job, change, minute):
    # given a worker that remembers the schedule as enabled, every minute at :00
    assert _apply(job, minute(5))["status"] == Status.SUCCEEDED
    slot = minute(3)
    remembered = delivery_guard(_beat(job, slot), now=timezone.now())
    assert remembered is not None

    # when the row is changed straight in the database (no signal, no cache to clear)
    change(PeriodicTask.objects.get(name=job.name), slot)

    # then the guarded claim writes nothing and says so
    with pytest.raises(GuardFailed):
        job_execute(_beat(job, slot, guard=remembered))
    assert not JobRun.objects.filter(job=job.name, slot=slot).exists()
    # and the task admits the message on what is stored now: not run as a fire time of the
    # schedule it no longer has
    outcome = _apply(job, slot)
    assert outcome["status"] in (Status.SKIPPED_DISABLED, Status.SUPERSEDED, Status.REFUSED)
    assert outcome["status"] != Status.SUCCEEDED
    assert own_schedule_read(job) is not None  # remembered again, as it reads now


def test_a_slot_with_a_row_is_claimed_only_after_admission(job, minute):
    slot = minute(2)
    assert _apply(job, minute(4))["status"] == Status.SUCCEEDED
    assert _apply(job, slot)["status"] == Status.SUCCEEDED
    guard = delivery_guard(_beat(job, slot), now=timezone.now())

    # a second delivery of the same slot (beat twice, a redelivery) never claims from memory
    with pytest.raises(GuardFailed):
        job_execute(_beat(job, slot, guard=guard))
    assert _apply(job, slot)["status"] == Status.DUPLICATE
