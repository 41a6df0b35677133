"""Validation on every ORM save of a schedule: refuse what beat or a worker could not use.

Only validation: the writes themselves (slot tracking, telling beat, the audit row) belong to the
services in `scheduler.services.writes`, which every interface calls.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db.models.signals import pre_save
from django.dispatch import receiver
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from scheduler.cron import Cron, CronError


@receiver(pre_save, sender=CrontabSchedule)
def _validate_crontab(sender: type, instance: CrontabSchedule, **_: Any) -> None:
    """Model validators run only in forms: refuse an impossible cron on every ORM save too."""
    try:
        Cron.from_model(instance).validate()
    except CronError as exc:
        raise ValidationError({"crontab": str(exc)}) from None


@receiver(pre_save, sender=PeriodicTask)
def _validate_periodic_task(sender: type, instance: PeriodicTask, **_: Any) -> None:
    """Malformed arguments or an unknown task would only fail later, in beat or on a worker."""
    from celery import current_app as app

    from scheduler.services.schedules import schedule_problems

    problems = schedule_problems(instance, set(app.tasks.keys()), check_crontab=False)
    if problems:
        raise ValidationError({"periodic_task": "; ".join(problems)})
