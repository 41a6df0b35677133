"""Keep JobSchedule.tracked_since honest: slots are expected only while a schedule is enabled."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models.signals import pre_save
from django.dispatch import receiver
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask, PeriodicTasks

from scheduler.cron import Cron, CronError
from scheduler.models import JobSchedule


@receiver(pre_save, sender=PeriodicTask)
def _restart_tracking(sender: type, instance: PeriodicTask, **_: Any) -> None:
    if instance.pk is None:
        return
    before = PeriodicTask.objects.filter(pk=instance.pk).values("enabled", "crontab_id").first()
    if before is None:
        return
    switched_on = instance.enabled and not before["enabled"]
    if switched_on or before["crontab_id"] != instance.crontab_id:
        JobSchedule.objects.filter(periodic_task_id=instance.pk).update(
            tracked_since=timezone.now(), reconciled_until=None
        )


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


@receiver(pre_save, sender=JobSchedule)
def _offset_changed(sender: type, instance: JobSchedule, **_: Any) -> None:
    """A new offset moves every slot: expect slots from now on, and make beat reload at once
    (django-celery-beat only notices changes to its own PeriodicTask rows)."""
    if instance.pk is None:
        return
    before = JobSchedule.objects.filter(pk=instance.pk).values_list("offset_seconds", flat=True)
    if before.first() == instance.offset_seconds:
        return
    instance.tracked_since = timezone.now()
    instance.reconciled_until = None
    transaction.on_commit(PeriodicTasks.update_changed)
