"""Keep JobSchedule.tracked_since honest: slots are expected only while a schedule is enabled."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import pre_save
from django.dispatch import receiver
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

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
