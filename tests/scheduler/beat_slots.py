"""Beat's messages in tests sent by hand: the worker runs a `beat` message only for a fire time
of the job's enabled schedule plus its offset (scheduler.services.deliveries)."""

from __future__ import annotations

from datetime import datetime

from django_celery_beat.models import PeriodicTask

from scheduler.cron import Cron
from scheduler.models import JobSchedule
from scheduler.registry import Job
from scheduler.services.writes import crontab_for


def schedule_slot(job: Job, slot: datetime) -> datetime:
    """Make `slot` (a whole second) a fire time of `job`, and return it.

    The schedule fires at that one minute of the year, at the slot's second, and its slots are
    tracked from the slot on (the reconciler expects none of them): beat and the reconciler
    behave as if it were not there, and the worker believes a beat message for the slot.
    """
    assert slot.microsecond == 0, slot
    cron = Cron(str(slot.minute), str(slot.hour), str(slot.day), str(slot.month), "*")
    task, created = PeriodicTask.objects.get_or_create(
        name=f"{job.name} at {slot.isoformat()}",
        defaults={"task": job.task, "crontab": crontab_for(cron)},
    )
    if created:
        JobSchedule.objects.create(
            periodic_task=task, offset_seconds=slot.second, tracked_since=slot
        )
    return slot
