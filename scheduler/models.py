"""The scheduler's own tables, beside django-celery-beat's (joined by PeriodicTask, not subclassed).

- JobSchedule: the second offset of a job's PeriodicTask (and since when its slots are expected).
- JobRun: the ledger: one row per (job, slot, attempt), plus rows for deliveries that did not run.
- JobLease: a job's lock, with a fencing token that grows at every acquisition.
- CatchUpStart: the seconds late runs are sent to start at, one per second.
- AuditEvent: the audit trail: who changed which schedule, ran or retried what, closed which
  incident (written through `scheduler.audit.audit_record` only, never edited).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from django_celery_beat.models import PeriodicTask

from core.permissions import RETRY_RUN, RUN_JOB, meta_permissions
from scheduler.validators import OFFSET_MAX, OFFSET_MIN, validate_offset

OFFSET_HELP = (
    "Seconds after the minute boundary at which this job starts (0-59). Jobs that share a minute "
    "start apart, so give each job its own second; JOB_STAGGER_ENABLED=0 sets every offset to 0."
)


class JobSchedule(models.Model):
    periodic_task = models.OneToOneField(
        PeriodicTask,
        on_delete=models.CASCADE,
        related_name="job_schedule",
        help_text="The django-celery-beat periodic task this offset belongs to.",
    )
    offset_seconds = models.PositiveSmallIntegerField(
        default=0,
        validators=[validate_offset],
        help_text=OFFSET_HELP,
    )
    tracked_since = models.DateTimeField(
        help_text="Slots before this moment are not expected (the schedule was created, enabled or "
        "changed then); the reconciler accounts for every slot after it.",
    )
    reconciled_until = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Every slot up to this moment has its ledger row (ran, or recorded missed).",
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(offset_seconds__gte=OFFSET_MIN, offset_seconds__lte=OFFSET_MAX),
                name="jobschedule_offset_0_59",
                violation_error_message="The offset must be between 0 and 59 seconds.",
            ),
        ]
        verbose_name = "job offset"

    def __str__(self) -> str:
        return f"{self.periodic_task.name} +{self.offset_seconds}s"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"
    RETRYING = "retrying", "retrying (a later attempt follows)"
    SKIPPED_LOCK = "skipped_lock", "skipped: lock held"
    DUPLICATE = "duplicate", "duplicate delivery"
    EXPIRED = "expired", "expired before it ran"
    MISSED = "missed", "missed"
    LOST = "lost", "lost (worker died)"
    # A message the worker did not believe (scheduler.services.deliveries); it never ran.
    REFUSED = "refused", "refused (not a due slot)"
    # A real beat message overtaken by a staff change while it waited for its offset: the
    # schedule was disabled, or its cron or offset moved (scheduler.services.deliveries).
    SKIPPED_DISABLED = "skipped_disabled", "skipped: schedule disabled"
    SUPERSEDED = "superseded", "superseded by a schedule change"


# Deliveries the worker turned away before the run path: they ran nothing and claim no slot.
NOT_ADMITTED = (RunStatus.REFUSED, RunStatus.SKIPPED_DISABLED, RunStatus.SUPERSEDED)

# The rows that own their slot (one per job, slot and attempt): not a duplicate delivery, and not
# one the worker turned away (NOT_ADMITTED), which claims nothing: a forged message naming a real
# future slot must not take that slot from the run beat sends for it later, and a message
# overtaken by a change must not take a slot the new settings may still fire. Every "the slot's
# run" query filters on it.
SLOT_OWNERS = Q(duplicate_of__isnull=True) & ~Q(status__in=NOT_ADMITTED)


class RunTrigger(models.TextChoices):
    BEAT = "beat", "beat"
    MANUAL = "manual", "manual (command line)"
    ADMIN = "admin", "admin"
    API = "api", "API"
    RETRY = "retry", "retry"
    RECONCILER = "reconciler", "reconciler"


class JobRun(models.Model):
    Status = RunStatus
    Trigger = RunTrigger
    SLOT_OWNERS = SLOT_OWNERS
    NOT_ADMITTED = NOT_ADMITTED

    TERMINAL = frozenset(
        {
            Status.SUCCEEDED,
            Status.FAILED,
            Status.SKIPPED_LOCK,
            Status.DUPLICATE,
            Status.EXPIRED,
            Status.MISSED,
            Status.LOST,
            Status.RETRYING,
            Status.REFUSED,
            Status.SKIPPED_DISABLED,
            Status.SUPERSEDED,
        }
    )

    job = models.CharField(max_length=100, help_text="Registered job name.")
    slot = models.DateTimeField(
        help_text="The moment this run was due: the minute boundary plus the offset, or the moment "
        "a manual run was asked for."
    )
    attempt = models.PositiveSmallIntegerField(default=1)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    trigger = models.CharField(max_length=20, choices=Trigger.choices, default=Trigger.BEAT)
    duplicate_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="duplicates",
        help_text="For a delivery that did not run: the run that owns the slot.",
        db_index=False,  # partial index in Meta: most rows have none
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        db_index=False,  # partial index in Meta: only manual runs have one
    )
    reason = models.CharField(max_length=255, blank=True, help_text="Who asked, from where, why.")
    # Indexed in Meta: db_index would add a second, LIKE-only index that every run's writes pay.
    task_id = models.CharField(max_length=255, blank=True)
    worker = models.CharField(max_length=255, blank=True)
    fence = models.BigIntegerField(null=True, blank=True, help_text="Lease token held by the run.")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    lateness_ms = models.BigIntegerField(null=True, blank=True, help_text="Start minus slot.")
    result = models.JSONField(default=dict, blank=True, help_text="Counts from the job's service.")
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)

    class Meta:
        constraints = [
            # The slot claim: a delivery that did not win it is stored with duplicate_of set; a
            # delivery the worker turned away claims nothing (SLOT_OWNERS).
            models.UniqueConstraint(
                fields=["job", "slot", "attempt"],
                condition=SLOT_OWNERS,
                name="jobrun_one_claim_per_slot_attempt",
            ),
            models.CheckConstraint(
                condition=Q(status__in=[s.value for s in RunStatus]), name="jobrun_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(trigger__in=[t.value for t in RunTrigger]), name="jobrun_trigger_valid"
            ),
            models.CheckConstraint(condition=Q(attempt__gte=1), name="jobrun_attempt_positive"),
            models.CheckConstraint(
                condition=Q(duplicate_of__isnull=True) | Q(status="duplicate"),
                name="jobrun_duplicate_has_status",
            ),
        ]
        # Every run inserts its row and then updates it off HOT (status is indexed), so each index
        # here is written twice per run: the run path's cost grows with their number.
        indexes = [
            models.Index(fields=["job", "-slot"], name="jobrun_job_slot"),
            models.Index(fields=["task_id"], name="jobrun_task_id"),
            models.Index(
                fields=["user"], condition=Q(user__isnull=False), name="jobrun_user_not_null"
            ),
            models.Index(
                fields=["duplicate_of"],
                condition=Q(duplicate_of__isnull=False),
                name="jobrun_duplicate_of_not_null",
            ),
            models.Index(fields=["status", "heartbeat_at"], name="jobrun_status_heartbeat"),
            # The newest runs first (the API's list, alerts' recent runs); nothing orders by
            # created_at.
            models.Index(fields=["-slot"], name="jobrun_slot"),
        ]
        ordering = ["-slot", "-attempt"]
        verbose_name = "job run"
        permissions = meta_permissions(RUN_JOB, RETRY_RUN)

    def __str__(self) -> str:
        return f"{self.job} @ {self.slot:%Y-%m-%d %H:%M:%S} #{self.attempt} {self.status}"


class JobLease(models.Model):
    """A job's lock. `token` grows at every acquisition: a write fenced with an old token fails."""

    job = models.CharField(max_length=100, primary_key=True)
    token = models.BigIntegerField(default=0)
    # Not indexed: with no index on the columns a run changes (token, holder, expiry), taking,
    # renewing and releasing the lease are HOT updates of one row. A foreign-key check against
    # a table of one row per job needs no index.
    holder = models.ForeignKey(
        JobRun, null=True, blank=True, on_delete=models.SET_NULL, db_index=False
    )
    expires_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.job} token {self.token}"


class ProcessHeartbeat(models.Model):
    """A process's own proof of life: one row per beat or watchdog process, stamped by it.

    Written only by the process it describes (scheduler.heartbeat), so the figure stops the moment
    that process stops; evidence that other processes write (sent messages, runs) keeps moving
    after it died.
    """

    class Kind(models.TextChoices):
        BEAT = "beat", "beat"
        WATCHDOG = "watchdog", "watchdog"

    kind = models.CharField(
        max_length=20,
        choices=Kind.choices,
        default=Kind.BEAT,
        help_text="Which process: beat (stamps every tick) or the watchdog (every pass).",
    )
    hostname = models.CharField(max_length=255, help_text="Host the process runs on.")
    pid = models.PositiveIntegerField(help_text="Process id on that host.")
    started_at = models.DateTimeField(help_text="When this process stamped first.")
    last_tick_at = models.DateTimeField(
        help_text="PostgreSQL's clock at the process's latest stamp (every few seconds for beat, "
        "every pass for the watchdog)."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "hostname", "pid"], name="processheartbeat_one_per_process"
            )
        ]
        verbose_name = "process heartbeat"

    def __str__(self) -> str:
        return f"{self.kind} {self.hostname} pid {self.pid} @ {self.last_tick_at:%Y-%m-%d %H:%M:%S}"


class JobRunTally(models.Model):
    """Totals of the ledger per (job, finished status), kept by PostgreSQL triggers on
    scheduler_jobrun (migration 0006) so that pruning the ledger never lowers them; see
    scheduler/tally.py. Written only by the triggers."""

    job = models.CharField(max_length=100, help_text="Registered job name.")
    status = models.CharField(max_length=20, help_text="A finished status of JobRun.")
    runs = models.BigIntegerField(default=0, help_text="Ledger rows that entered this status.")
    duration_count = models.BigIntegerField(default=0)
    duration_sum_ms = models.BigIntegerField(default=0)
    duration_le = ArrayField(
        models.BigIntegerField(), help_text="Cumulative counts per DURATION_BUCKETS_MS bound."
    )
    lateness_count = models.BigIntegerField(default=0, help_text="Beat-sent runs that started.")
    lateness_sum_ms = models.BigIntegerField(default=0)
    lateness_le = ArrayField(
        models.BigIntegerField(), help_text="Cumulative counts per LATENESS_BUCKETS_MS bound."
    )
    last_finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "status"], name="jobruntally_one_per_status")
        ]
        verbose_name = "job run tally"

    def __str__(self) -> str:
        return f"{self.job} {self.status}: {self.runs}"


class CatchUpStart(models.Model):
    """A second taken by a late run (beat's catch-up at start, the reconciler's re-send), so that
    two of them never start in the same second (scheduler.services.catchup). Rows older than an
    hour are pruned at the next reservation."""

    second = models.DateTimeField(
        primary_key=True, help_text="The whole second the late run is sent to start at."
    )
    job = models.CharField(max_length=100, help_text="Registered job name.")
    slot = models.DateTimeField(help_text="The slot the late run is for.")

    class Meta:
        verbose_name = "catch-up start"

    def __str__(self) -> str:
        return f"{self.job} @ {self.second:%Y-%m-%d %H:%M:%S} for {self.slot:%H:%M:%S}"


# ---------------------------------------------------------------------------------------------
# The audit trail (scheduler.audit): every schedule write, manual run and retry, whoever asked
# ---------------------------------------------------------------------------------------------


class AuditAction(models.TextChoices):
    SCHEDULE_CREATE = "schedule.create", "schedule created"
    SCHEDULE_UPDATE = "schedule.update", "schedule changed"
    SCHEDULE_DELETE = "schedule.delete", "schedule deleted"
    SCHEDULE_ENABLE = "schedule.enable", "schedule enabled"
    SCHEDULE_DISABLE = "schedule.disable", "schedule disabled"
    CRONTAB_SAVE = "crontab.save", "crontab saved"
    CRONTAB_DELETE = "crontab.delete", "crontab deleted"
    JOB_RUN = "job.run", "job run by hand"
    RUN_RETRY = "run.retry", "failed run retried"
    INCIDENT_CLOSE = "incident.close", "alert incident closed by hand"


class AuditEvent(models.Model):
    """One audited write. Rows are written by `scheduler.audit.audit_record` inside the write's
    own transaction, never edited: the admin shows them read-only. `username` is copied so that a
    row still says who acted after the user is deleted.

    The table keeps its first name (`ops_auditevent`): the model moved from ops without a copy.
    """

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
    via = models.CharField(max_length=20, help_text="admin, api, cli or system.")
    action = models.CharField(max_length=30, choices=AuditAction.choices)
    object_type = models.CharField(max_length=50, help_text="e.g. schedule, crontab, job, run.")
    object_id = models.CharField(max_length=100, blank=True)
    object_repr = models.CharField(max_length=200, help_text="e.g. the job name.")
    before = models.JSONField(null=True, blank=True, help_text="State before the change.")
    after = models.JSONField(null=True, blank=True, help_text="State after the change.")
    reason = models.CharField(max_length=255, blank=True)

    class Meta:
        db_table = "ops_auditevent"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["object_type", "object_repr", "-created_at"],
                name="ops_auditev_object__1a94fa_idx",
            )
        ]
        verbose_name = "audit event"

    def __str__(self) -> str:
        when = f"{self.created_at:%Y-%m-%d %H:%M:%S}" if self.created_at else "-"
        return f"{when} {self.username or '-'} {self.action} {self.object_repr}"
