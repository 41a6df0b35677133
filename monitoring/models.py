"""Monitoring's tables: alert incidents with their notifications (written by `monitoring.alerts`
and `monitoring.outages`).

They moved here from ops (monitoring 0001, ops 0008: state only), keeping their tables
(`ops_incident`, `ops_alertdelivery`), index and constraint names, and content types (renamed in
place, so permission grants survive).
"""

from __future__ import annotations

from django.db import models

from core.permissions import CLOSE_INCIDENT, VIEW_METRICS, meta_permissions

# ---------------------------------------------------------------------------------------------
# Alerts (monitoring.alerts): incidents of a job and the notifications they caused
# ---------------------------------------------------------------------------------------------


class IncidentKind(models.TextChoices):
    FAILURES = "failures", "failed several times in a row"
    MISSED = "missed", "missed a run"
    LATE = "late", "started late"
    # Outages of the platform (monitoring.outages): job `*`, one incident for every job's slots.
    BEAT_DOWN = "beat_down", "beat down"
    BROKER_DOWN = "broker_down", "broker down"
    # A queue with work due and no worker consuming it (monitoring.outages): job `queue:<name>`, one
    # incident per queue.
    NO_WORKER = "no_worker", "no worker on a queue"


# Per-job incidents name a registered job; an outage incident names this instead (and the
# `job_name` label of jobsite_job_open_incidents is `*` for it).
OUTAGE_JOB = "*"
JOB_KINDS = (IncidentKind.FAILURES, IncidentKind.MISSED, IncidentKind.LATE)
OUTAGE_KINDS = (IncidentKind.BEAT_DOWN, IncidentKind.BROKER_DOWN)
# A no-worker incident names its queue in `job`: `queue:default`.
QUEUE_PREFIX = "queue:"


class Incident(models.Model):
    """One problem of one job, from the run that showed it until a later run succeeded; or one
    outage of the platform (beat down, broker down: job `*`), from the watchdog pass that saw it
    until the one that saw it end, with every job's slots it cost counted into it.

    At most one open incident per (job, kind) — a partial unique constraint — so two watchdogs
    evaluating at once open it, and notify, once. Ledger rows are referred to by id and copied
    slot (not by foreign key): retention pruning deletes old runs with plain SQL.
    """

    Kind = IncidentKind

    job = models.CharField(
        max_length=100,
        help_text="Registered job name, * for an outage of the platform, or queue:<name> for a "
        "queue no worker consumes.",
    )
    kind = models.CharField(max_length=20, choices=IncidentKind.choices)
    opened_at = models.DateTimeField(help_text="When the alert evaluation saw the condition.")
    resolved_at = models.DateTimeField(
        null=True, blank=True, help_text="Empty while open: no run has succeeded since."
    )
    down_since = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Incidents that group the slots they cost (beat down, broker down, no worker "
        "on a queue): beat's last heartbeat, the last watchdog pass that reached the broker, or "
        "the last pass that found the queue served. Missed and late slots from then until it "
        "resolved belong to the incident.",
    )
    first_run_id = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="Ledger row that opened the incident (an outage's first slot it cost; empty "
        "while it has cost none).",
    )
    first_slot = models.DateTimeField(null=True, blank=True)
    last_run_id = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="Newest ledger row showing the condition; rows up to it belong to this incident.",
    )
    last_slot = models.DateTimeField(null=True, blank=True)
    occurrences = models.PositiveIntegerField(
        default=1,
        help_text="Ledger rows showing the condition while it was open (an outage's: the slots "
        "it cost).",
    )
    summary = models.CharField(max_length=255, help_text="What the notification said.")
    detail = models.TextField(blank=True, help_text="The last error, or the lateness.")
    resolved_by_run_id = models.BigIntegerField(
        null=True, blank=True, help_text="The succeeded run that resolved it."
    )
    resolved_by_slot = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Slot of that run: a missed or late slot before it belongs to this incident, "
        "even when recorded after it (the reconciler records a miss 90 s or more later).",
    )
    resolution = models.CharField(max_length=255, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["job", "kind"],
                condition=models.Q(resolved_at__isnull=True),
                name="incident_one_open_per_job_kind",
                violation_error_message="This job already has an open incident of this kind.",
            ),
            models.CheckConstraint(
                condition=models.Q(kind__in=IncidentKind.values), name="incident_kind_valid"
            ),
            # An outage is the platform's (job *); a job's incident is never named *.
            models.CheckConstraint(
                condition=models.Q(kind__in=OUTAGE_KINDS, job=OUTAGE_JOB)
                | (~models.Q(kind__in=OUTAGE_KINDS) & ~models.Q(job=OUTAGE_JOB)),
                name="incident_outage_is_job_star",
                violation_error_message="Outage incidents, and only they, have the job *.",
            ),
        ]
        indexes = [models.Index(fields=["job", "kind", "-last_run_id"], name="incident_cursor")]
        ordering = ["-opened_at", "-id"]
        db_table = "ops_incident"  # moved from ops (monitoring 0001): the table kept its name
        # Scraping /metrics sits with incidents: both are how operators learn of trouble.
        permissions = meta_permissions(CLOSE_INCIDENT, VIEW_METRICS)

    def __str__(self) -> str:
        state = "open" if self.resolved_at is None else "resolved"
        return f"{self.job} {self.kind} ({state}) since {self.opened_at:%Y-%m-%d %H:%M:%S}"

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


class AlertDelivery(models.Model):
    """One notification of an incident (opened or resolved) through one channel."""

    class Event(models.TextChoices):
        OPENED = "opened", "opened"
        RESOLVED = "resolved", "resolved"

    class Channel(models.TextChoices):
        EMAIL = "email", "e-mail"
        WEBHOOK = "webhook", "webhook"

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        SENDING = "sending", "sending"
        SENT = "sent", "sent"
        FAILED = "failed", "failed"

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=10, choices=Event.choices)
    channel = models.CharField(max_length=10, choices=Channel.choices)
    target = models.CharField(
        max_length=500, help_text="Recipients, or the webhook's scheme and host (never its path)."
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, help_text="Why the last attempt failed.")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["incident", "event", "channel"], name="alertdelivery_once_per_channel"
            ),
        ]
        indexes = [models.Index(fields=["status", "last_attempt_at"], name="alertdelivery_due")]
        ordering = ["created_at", "id"]
        verbose_name_plural = "alert deliveries"
        db_table = "ops_alertdelivery"  # moved from ops (monitoring 0001), as ops_incident

    def __str__(self) -> str:
        return f"{self.incident.job} {self.event} via {self.channel}: {self.status}"
