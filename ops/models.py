"""The audit trail: who changed which schedule, offset or enabled flag, and who ran what by hand.

Rows are written by `ops.services` only (admin and API both go through it), never edited: the
admin shows them read-only. `username` is copied so that a row still says who acted after the
user is deleted.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditAction(models.TextChoices):
    SCHEDULE_CREATE = "schedule.create", "schedule created"
    SCHEDULE_UPDATE = "schedule.update", "schedule changed"
    SCHEDULE_DELETE = "schedule.delete", "schedule deleted"
    SCHEDULE_ENABLE = "schedule.enable", "schedule enabled"
    SCHEDULE_DISABLE = "schedule.disable", "schedule disabled"
    JOB_RUN = "job.run", "job run by hand"
    RUN_RETRY = "run.retry", "failed run retried"


class AuditEvent(models.Model):
    Action = AuditAction

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        help_text="Who acted (empty for the system or a deleted user; see username).",
    )
    username = models.CharField(max_length=150, blank=True, help_text="Copied at the time.")
    ip = models.GenericIPAddressField(
        null=True, blank=True, help_text="Client address of the request that made the change."
    )
    via = models.CharField(max_length=20, help_text="admin, api or cli.")
    action = models.CharField(max_length=30, choices=AuditAction.choices)
    object_type = models.CharField(max_length=50, help_text="e.g. schedule, job, run.")
    object_id = models.CharField(max_length=100, blank=True)
    object_repr = models.CharField(max_length=200, help_text="e.g. the job name.")
    before = models.JSONField(null=True, blank=True, help_text="State before the change.")
    after = models.JSONField(null=True, blank=True, help_text="State after the change.")
    reason = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_repr", "-created_at"])]
        verbose_name = "audit event"

    def __str__(self) -> str:
        when = f"{self.created_at:%Y-%m-%d %H:%M:%S}" if self.created_at else "-"
        return f"{when} {self.username or '-'} {self.action} {self.object_repr}"
