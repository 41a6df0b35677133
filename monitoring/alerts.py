"""Alerts without Prometheus: incidents of a job, notified once through e-mail and a webhook.

Evaluated by the watchdog (monitoring.watchdog, `manage.py watchdog`) right after each reconciler
pass, every 30 s, in a process of its own: alerts fire when beat, every worker or the broker is
dead — exactly when slots go missed. `alerts_evaluate` may also be called from a shell; it only
reads the ledger and writes incidents.

Conditions, per job, over ledger rows whose slot is in the last day (`LOOKBACK`):
- `failures`: the last N runs of the job to finish (succeeded, failed or lost; retrying attempts
  are not an outcome) all failed — N is JOBSITE_ALERT_FAILURES;
- `missed`: a `missed` or `expired` row (no run started for the slot);
- `late`: a beat-sent first attempt started more than JOBSITE_ALERT_LATENESS_SECONDS after its
  slot (retries and catch-up runs are late by design and do not count).

An incident opens on the row that shows the condition and notifies every configured channel
once. While it is open, further rows showing it are counted into it (`occurrences`) without a
new notification. It resolves when a run of the job succeeds after it opened (for `late`: a
beat-sent run on time), or when an operator closes it in the admin, with a "resolved" notice.
A later problem opens a new incident: rows up to an incident's `last_run_id` belong to it, never
to the next one. One open incident per (job, kind) is a database constraint, so two watchdogs
evaluating at once notify once.

Delivery (`alerts_deliver`) follows evaluation in the watchdog's pass, within a time budget, so
an SMTP server or chat webhook that hangs (likely during the very outage being reported) delays
the next pass by at most that budget and one channel timeout. Notifications are rows
(`AlertDelivery`, `pending` first), so nothing is lost when the budget runs out or the watchdog
stops: the next pass sends what is pending, retries a failed delivery up to `MAX_ATTEMPTS`
times, `RETRY_AFTER` apart, and sends again a delivery left `sending` by a process that died
mid-send. Each claim is a conditional UPDATE, so two watchdogs never send one twice.
"""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings as django_settings
from django.core.mail import get_connection, send_mail
from django.db import IntegrityError, transaction
from django.db.models import F, Max, Q, QuerySet
from django.urls import reverse
from django.utils import timezone

from monitoring import conf
from monitoring.models import JOB_KINDS, AlertDelivery, Incident
from monitoring.outages import outage_slots, outage_windows, queue_outage_slots
from scheduler.audit import Actor, audit_record
from scheduler.models import AuditEvent, JobRun

logger = logging.getLogger(__name__)

LOOKBACK = timedelta(days=1)  # ledger rows of older slots never open an incident
MAX_ATTEMPTS = 3
RETRY_AFTER = timedelta(seconds=60)
STUCK_AFTER = timedelta(minutes=10)  # a `sending` row this old was interrupted mid-send
DELIVERIES_PER_PASS = 50

Kind = Incident.Kind
Status = JobRun.Status
FAILED = (Status.FAILED, Status.LOST)
OUTCOMES = (Status.SUCCEEDED, Status.FAILED, Status.LOST)
MISSED = (Status.MISSED, Status.EXPIRED)


@dataclass(frozen=True)
class Finding:
    """Ledger rows (oldest first) showing one condition of one job, newer than its cursor."""

    rows: list[JobRun]
    summary: str
    detail: str
    complete: bool = True  # enough rows to open an incident (not only to extend one)


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def alerts_evaluate(*, now: datetime | None = None) -> dict[str, int]:
    """Open, extend and resolve incidents from the ledger; returns counts of what changed.

    Calling it again without new ledger rows changes nothing.
    """
    now = now or timezone.now()
    config = conf.load()
    since = now - LOOKBACK
    counts = {"opened": 0, "updated": 0, "resolved": 0}
    incidents = Incident.objects.filter(kind__in=JOB_KINDS)  # outages are monitoring.outages'
    open_incidents = {(i.job, i.kind): i for i in incidents.filter(resolved_at=None)}
    # Rows up to an incident's last row, and missed or late slots up to the run that resolved
    # it, belong to it: only what comes after may open the next incident.
    cursors = {
        (row["job"], row["kind"]): (row["cursor"] or 0, row["after_slot"])
        for row in incidents.values("job", "kind").annotate(
            cursor=Max("last_run_id"), after_slot=Max("resolved_by_slot")
        )
    }
    # Missed and late slots of an outage (beat or broker down) belong to its incident; those of
    # a queue's jobs while no worker consumed it, to that queue's no-worker incident.
    in_outage = outage_slots(outage_windows(since=since, now=now)) | queue_outage_slots(
        since=since, now=now
    )
    # One grouped scan of the day's rows finds, per job, the newest row showing each condition;
    # only a job with a row newer than its cursor is looked at closer, so a healthy ledger costs
    # this one statement (~25 ms over a day of 12 every-minute jobs, 17k rows, on 2 cores).
    newest = {
        row["job"]: row
        for row in JobRun.objects.filter(slot__gte=since, duplicate_of=None)
        .order_by()
        .values("job")
        .annotate(
            failures=Max("id", filter=Q(status__in=FAILED)),
            missed=Max("id", filter=Q(status__in=MISSED) & ~in_outage),
            late=Max(
                "id",
                filter=Q(
                    trigger=JobRun.Trigger.BEAT,
                    attempt=1,
                    lateness_ms__gt=config.lateness_seconds * 1000,
                )
                & ~in_outage,
            ),
        )
    }
    for job in sorted(set(newest) | {job for job, _ in open_incidents}):
        for kind in JOB_KINDS:
            incident = open_incidents.get((job, kind))
            cursor, after_slot = cursors.get((job, kind), (0, None))
            latest = newest.get(job, {}).get(kind)
            finding = None
            if latest is not None and latest > cursor:
                finding = _find(
                    job,
                    kind,
                    after_id=cursor,
                    after_slot=after_slot,
                    since=since,
                    config=config,
                    in_outage=in_outage,
                )
            if incident is None:
                if finding and finding.complete and _incident_open(job, kind, finding, now, config):
                    counts["opened"] += 1
                continue
            recovery = _recovery(incident, now, config)
            rows = _before(recovery, finding.rows, kind) if finding else []
            if rows and _incident_extend(incident, rows, finding, config, in_outage):
                counts["updated"] += 1
            if recovery is not None and _incident_resolve(incident, recovery, now, config):
                counts["resolved"] += 1
    return counts


def _condition_rows(
    job: str, kind: str, config: conf.AlertSettings, in_outage: Q | None = None
) -> QuerySet[JobRun]:
    """The job's ledger rows that show the condition of `kind` (any age); missed and late rows
    of an outage (`in_outage`) are the outage's, not the job's."""
    runs = JobRun.objects.filter(job=job, duplicate_of=None)
    if kind == Kind.FAILURES:
        return runs.filter(status__in=FAILED)
    if in_outage is not None:
        runs = runs.exclude(in_outage)
    if kind == Kind.MISSED:
        return runs.filter(status__in=MISSED)
    return runs.filter(
        trigger=JobRun.Trigger.BEAT, attempt=1, lateness_ms__gt=config.lateness_seconds * 1000
    )


def _find(
    job: str,
    kind: str,
    *,
    after_id: int,
    after_slot: datetime | None = None,
    since: datetime,
    config: conf.AlertSettings,
    in_outage: Q | None = None,
) -> Finding | None:
    """Rows newer than `after_id` showing the condition; for `failures` only while the streak
    holds (a new incident needs N failures newer than the previous incident)."""
    if kind == Kind.FAILURES:
        # The last N runs to finish, whatever their slot (a retried old slot finishes late).
        streak = list(
            JobRun.objects.filter(
                job=job,
                duplicate_of=None,
                slot__gte=since,
                status__in=OUTCOMES,
                finished_at__isnull=False,
            ).order_by("-finished_at", "-id")[: config.failures]
        )
        if len(streak) < config.failures or any(r.status not in FAILED for r in streak):
            return None
        rows = sorted((r for r in streak if r.pk > after_id), key=lambda r: r.pk)
        if not rows:
            return None
        last = rows[-1]
        return Finding(
            rows=rows,
            complete=len(rows) == config.failures,
            summary=f"{job} failed {config.failures} times in a row",
            detail=f"last: run #{last.pk} ({last.status}) for slot {_when(last.slot)}: "
            f"{_first_line(last.error) or 'no error recorded'}",
        )
    candidates = _condition_rows(job, kind, config, in_outage).filter(
        pk__gt=after_id, slot__gte=since
    )
    if after_slot is not None:
        candidates = candidates.filter(slot__gt=after_slot)
    rows = list(candidates.order_by("id"))
    if kind == Kind.MISSED:
        rows = _not_caught_up(job, rows)
    if not rows:
        return None
    first = rows[0]
    if kind == Kind.MISSED:
        return Finding(
            rows=rows,
            summary=f"{job} missed its run at {_when(first.slot)} ({first.status})",
            detail=_first_line(first.error),
        )
    return Finding(
        rows=rows,
        summary=f"{job} started {first.lateness_ms / 1000:.0f} s late "
        f"(slot {_when(first.slot)}, threshold {config.lateness_seconds} s)",
        detail=f"run #{first.pk} started at {_when(first.started_at)} on {first.worker or '-'}",
    )


def _incident_open(
    job: str, kind: str, finding: Finding, now: datetime, config: conf.AlertSettings
) -> bool:
    first, last = finding.rows[0], finding.rows[-1]
    try:
        with transaction.atomic():
            incident = Incident.objects.create(
                job=job,
                kind=kind,
                opened_at=now,
                first_run_id=first.pk,
                first_slot=first.slot,
                last_run_id=last.pk,
                last_slot=last.slot,
                occurrences=len(finding.rows),
                summary=finding.summary[:255],
                detail=finding.detail,
            )
            alerts_queue(incident, AlertDelivery.Event.OPENED, config)
    except IntegrityError:
        return False  # another evaluation (a second watchdog) opened it first, and notifies
    logger.warning("alert: %s", incident.summary)
    return True


def _recovery(incident: Incident, now: datetime, config: conf.AlertSettings) -> JobRun | None:
    """The first run of the job that succeeded after the incident opened (for `late`: a beat
    run on time), or None."""
    recovered = JobRun.objects.filter(
        job=incident.job,
        duplicate_of=None,
        status=Status.SUCCEEDED,
        slot__gte=now - LOOKBACK,  # the (job, slot) index; a recovery is a recent run
        finished_at__gt=incident.opened_at,
    )
    if incident.kind == Kind.LATE:
        recovered = recovered.filter(
            trigger=JobRun.Trigger.BEAT,
            attempt=1,
            lateness_ms__lte=config.lateness_seconds * 1000,
        )
    return recovered.order_by("finished_at", "id").first()


def _before(recovery: JobRun | None, rows: list[JobRun], kind: str) -> list[JobRun]:
    """The rows that happened before the recovery: those after it are a new problem."""
    if recovery is None:
        return rows
    if kind == Kind.FAILURES:
        return [r for r in rows if r.finished_at and r.finished_at <= recovery.finished_at]
    return [r for r in rows if r.slot < recovery.slot]


def _not_caught_up(job: str, rows: list[JobRun]) -> list[JobRun]:
    """The missed rows that are a page: those the reconciler's catch-up does not cover.

    After downtime the reconciler re-sends a job's newest missed slot once, within its starting
    deadline (`catch_up="once"`), and records the older ones `missed`, often in the same pass:
    the job runs once for all of them. A missed row older than such a re-send is not paged
    while the re-send is queued or running (it waits for what the reconciler does), nor once it
    succeeded (the job caught up). If the re-send fails or is missed itself, the rows page.
    """
    if not rows:
        return rows
    catch_ups = list(
        JobRun.objects.filter(
            job=job,
            trigger=JobRun.Trigger.RECONCILER,
            duplicate_of=None,
            slot__gt=min(r.slot for r in rows),
            status__in=(Status.QUEUED, Status.RUNNING, Status.RETRYING, Status.SUCCEEDED),
        ).values_list("slot", flat=True)
    )
    if not catch_ups:
        return rows
    newest = max(catch_ups)
    return [r for r in rows if r.slot >= newest]


def _incident_extend(
    incident: Incident,
    rows: list[JobRun],
    finding: Finding,
    config: conf.AlertSettings,
    in_outage: Q | None = None,
) -> bool:
    """Count newer rows showing the condition into the open incident; no notification."""
    last = rows[-1]
    # Counted on from the stored count, not recounted from first_run_id: retention prunes the
    # oldest rows of an incident that stays open longer than failed runs are kept.
    newer = (
        _condition_rows(incident.job, incident.kind, config, in_outage)
        .filter(pk__gt=incident.last_run_id or 0, pk__lte=last.pk)
        .count()
    )
    return bool(
        Incident.objects.filter(pk=incident.pk, last_run_id__lt=last.pk).update(
            last_run_id=last.pk,
            last_slot=last.slot,
            occurrences=incident.occurrences + newer,
            detail=finding.detail if incident.kind == Kind.FAILURES else incident.detail,
        )
    )


def _incident_resolve(
    incident: Incident, run: JobRun, now: datetime, config: conf.AlertSettings
) -> bool:
    resolution = f"run #{run.pk} (slot {_when(run.slot)}) succeeded at {_when(run.finished_at)}"
    with transaction.atomic():
        won = Incident.objects.filter(pk=incident.pk, resolved_at=None).update(
            resolved_at=now,
            resolved_by_run_id=run.pk,
            resolved_by_slot=run.slot,
            resolution=resolution,
        )
        if won:
            incident.refresh_from_db()
            alerts_queue(incident, AlertDelivery.Event.RESOLVED, config)
    if won:
        logger.info("alert resolved: %s: %s", incident.summary, resolution)
    return bool(won)


def alerts_queue(incident: Incident, event: str, config: conf.AlertSettings) -> None:
    """One pending delivery of `event` per configured channel (sent by `alerts_deliver`)."""
    targets = {
        AlertDelivery.Channel.EMAIL: ", ".join(config.emails),
        AlertDelivery.Channel.WEBHOOK: config.webhook_target,
    }
    AlertDelivery.objects.bulk_create(
        AlertDelivery(incident=incident, event=event, channel=channel, target=target[:500])
        for channel, target in targets.items()
        if target
    )


def incidents_close(
    *, actor: Actor, incident_ids: Iterable[int], now: datetime | None = None
) -> int:
    """Resolve open incidents by hand (e.g. of a job that was disabled or removed and will never
    succeed again), with a "resolved" notice and an audit row each; returns how many closed.

    Rows up to the incident's last one stay counted in it: only newer problems open a new one
    (for `failures`, N newer failures)."""
    now = now or timezone.now()
    config = conf.load()
    closed = 0
    for incident in Incident.objects.filter(pk__in=list(incident_ids), resolved_at=None):
        resolution = f"closed by hand: {actor.describe()}"
        with transaction.atomic():
            if not Incident.objects.filter(pk=incident.pk, resolved_at=None).update(
                resolved_at=now, resolution=resolution[:255]
            ):
                continue
            incident.refresh_from_db()
            alerts_queue(incident, AlertDelivery.Event.RESOLVED, config)
            audit_record(
                actor=actor,
                action=AuditEvent.Action.INCIDENT_CLOSE,
                object_type="incident",
                object_id=incident.pk,
                object_repr=f"{incident.job} {incident.kind}",
                before={"open": True, "summary": incident.summary},
                after={"open": False, "resolution": incident.resolution},
            )
        closed += 1
    return closed


# ---------------------------------------------------------------------------------------------
# Delivery
# ---------------------------------------------------------------------------------------------


class DeliveryError(Exception):
    """A channel did not take the notification; the message is recorded on the delivery."""


def alerts_deliver(*, now: datetime | None = None, until: float | None = None) -> dict[str, int]:
    """Send pending notifications (and retry failed or interrupted ones); returns counts.

    Every delivery is claimed with a conditional UPDATE before it is sent, so two callers at
    once send it once. Channel errors are recorded on the row, never raised. With `until` (a
    `time.monotonic()` moment) no delivery is started after it: the rest stay pending for the
    next call.
    """
    now = now or timezone.now()
    config = conf.load()
    due = (
        AlertDelivery.objects.filter(
            Q(status=AlertDelivery.Status.PENDING)
            | Q(
                status=AlertDelivery.Status.FAILED,
                attempts__lt=MAX_ATTEMPTS,
                last_attempt_at__lt=now - RETRY_AFTER,
            )
            | Q(status=AlertDelivery.Status.SENDING, last_attempt_at__lt=now - STUCK_AFTER)
        )
        .select_related("incident")
        .order_by("id")[:DELIVERIES_PER_PASS]
    )
    counts = {"sent": 0, "failed": 0}
    for delivery in due:
        if until is not None and time.monotonic() >= until:
            break
        claimed = AlertDelivery.objects.filter(
            pk=delivery.pk, status=delivery.status, attempts=delivery.attempts
        ).update(
            status=AlertDelivery.Status.SENDING,
            attempts=F("attempts") + 1,
            last_attempt_at=timezone.now(),
        )
        if not claimed:
            continue  # another process took it
        try:
            _send(delivery, config)
        except Exception as exc:
            error = str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
            AlertDelivery.objects.filter(pk=delivery.pk).update(
                status=AlertDelivery.Status.FAILED, error=error[:2000]
            )
            counts["failed"] += 1
            logger.warning(
                "alert %s via %s to %s failed: %s",
                delivery.event,
                delivery.channel,
                delivery.target,
                error,
            )
        else:
            AlertDelivery.objects.filter(pk=delivery.pk).update(
                status=AlertDelivery.Status.SENT, sent_at=timezone.now(), error=""
            )
            counts["sent"] += 1
    return counts


def alert_text(incident: Incident, event: str) -> str:
    """What operators read in their mailbox or chat room."""
    runs = reverse("admin:scheduler_jobrun_changelist") + f"?job={incident.job}"
    if event == AlertDelivery.Event.RESOLVED:
        return (
            f"[jobsite] RESOLVED {incident.summary}\n"
            f"{incident.resolution}; {incident.occurrences} occurrence(s) since "
            f"{_when(incident.opened_at)}.\nRuns: {runs}"
        )
    lines = [f"[jobsite] ALERT {incident.summary}"]
    if incident.detail:
        lines.append(incident.detail)
    lines.append(f"Runs: {runs}")
    return "\n".join(lines)


def _send(delivery: AlertDelivery, config: conf.AlertSettings) -> None:
    text = alert_text(delivery.incident, delivery.event)
    if delivery.channel == AlertDelivery.Channel.EMAIL:
        recipients = [a.strip() for a in delivery.target.split(",") if a.strip()]
        # The SMTP backend takes `timeout` (Django's EMAIL_TIMEOUT otherwise, default none).
        mail = get_connection(timeout=config.timeout_seconds)
        subject, _, body = text.partition("\n")
        send_mail(
            subject,
            body,
            django_settings.DEFAULT_FROM_EMAIL,
            recipients,
            connection=mail,
        )
        return
    _post_webhook(config, _webhook_body(delivery.incident, delivery.event, chat_escaped(text)))


_MENTION = re.compile(r"@(channel|here|all|everyone)\b", re.IGNORECASE)


def chat_escaped(text: str) -> str:
    """`text` as literal chat text: a job's error line must not ping a room or render markup.

    Slack reads `<!channel>`, `<@U123>` and `<url|label>` as markup in a webhook's text and asks
    for `&`, `<`, `>` to be escaped (https://api.slack.com/reference/surfaces/formatting#escaping);
    Mattermost and Rocket.Chat ping on a bare `@channel`/`@here`/`@all`, which a zero-width space
    after the `@` disarms.
    """
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MENTION.sub("@\u200b\\1", escaped)


def _webhook_body(incident: Incident, event: str, text: str) -> dict[str, Any]:
    # `text` is what Slack, Mattermost and Rocket.Chat incoming webhooks show; the rest is for
    # receivers that route on fields.
    return {
        "text": text,
        "event": event,
        "incident": {
            "id": incident.pk,
            "job": incident.job,
            "kind": incident.kind,
            "opened_at": incident.opened_at.isoformat(),
            "resolved_at": incident.resolved_at.isoformat() if incident.resolved_at else None,
            "occurrences": incident.occurrences,
            "first_slot": incident.first_slot.isoformat() if incident.first_slot else None,
            "last_slot": incident.last_slot.isoformat() if incident.last_slot else None,
            "down_since": incident.down_since.isoformat() if incident.down_since else None,
        },
    }


def _post_webhook(config: conf.AlertSettings, body: dict[str, Any]) -> None:
    if not config.webhook_url:
        raise DeliveryError("JOBSITE_ALERT_WEBHOOK_URL is no longer set")
    request = urllib.request.Request(  # noqa: S310 -- http(s) only, checked by monitoring.conf
        config.webhook_url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "jobsite-alerts"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=config.timeout_seconds) as response:  # noqa: S310
            response.read(64 * 1024)
    except urllib.error.HTTPError as exc:
        detail = exc.read(300).decode(errors="replace")
        raise DeliveryError(f"webhook answered HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:  # refused, unknown host, timeout, reset
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"webhook unreachable: {reason!r}") from None


# ---------------------------------------------------------------------------------------------
# Reads for the admin, the dashboard and /metrics
# ---------------------------------------------------------------------------------------------


def open_incidents(*, jobs: Iterable[str] | None = None) -> list[Incident]:
    incidents = Incident.objects.filter(resolved_at=None).prefetch_related("deliveries")
    if jobs is not None:
        incidents = incidents.filter(job__in=list(jobs))
    return list(incidents.order_by("job", "kind"))


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment else "-"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else ""
