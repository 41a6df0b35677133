"""Outage incidents: one "beat down" or "broker down" incident per outage, with every job's slots
it cost counted into it, instead of one `missed` (or `late`) incident per job.

Evaluated by the watchdog (monitoring.watchdog) at the start of each pass, before the reconciler:

- **beat down**: beat's heartbeat (monitoring.liveness.beat_liveness, judged by PostgreSQL's clock)
  is older than HEALTH_BEAT_DOWN_AFTER (60 s), or no beat ever stamped one. `down_since` is beat's
  last heartbeat. It resolves at the first pass that sees a fresh heartbeat.
- **broker down**: the broker does not accept a connection within BROKER_TIMEOUT. `down_since` is
  the last pass of this process that reached it (or this pass, for the first one). It resolves at
  the first pass that reaches it again.

A slot whose `missed`, `expired` or late (`late` condition) row has its slot between an outage's
`down_since` and its resolution belongs to the outage: it is counted into it (`occurrences`,
first and last run) and opens no per-job incident (monitoring.alerts leaves those rows out). Rows
the reconciler records after the outage resolved (90 s or more after their slot) are still counted
into it: one outage, one alert. Per-job failures (`failures`) are never grouped.

The outage incident is opened (and notified) once: the partial unique constraint on open
(job, kind) holds for job `*` too, so two watchdogs open it once.

**No worker on a queue** (`queue_workers_evaluate`, the watchdog's `workers` step): one incident
per queue (job `queue:<name>`, kind `no_worker`) that has work due — messages waiting in it, or an
enabled job routed to it — and no worker consuming it; it resolves at the first pass that finds
a consumer again (or no work due any more). Who consumes what is asked of the workers themselves:
`app.control.inspect(timeout=1).active_queues()`, one broadcast through the broker's pidbox,
answered by each worker's consumer thread (also while its pool runs tasks, for the prefork and
threads pools the Procfile and compose use; a `solo` worker busy with a task cannot answer). It
was chosen over worker heartbeat events because those say a worker is alive, not which queues it
consumes (that still needs `active_queues`), and they need a receiver subscribed all the time,
where a pass needs one question. Redis itself cannot tell: a consumer is a client blocked in
BRPOP, anonymous. The broadcast waits its whole timeout (it cannot know how many workers will
answer): ~1 s per pass. A queue that looks unserved is asked about once more with a longer
timeout (2 s) before an incident opens, so one late reply does not page. Not judged while the
broker is down (that is the broker-down incident). Its `down_since` is the last pass of this
process that found the queue consumed or with no work due (or this pass, when that was not within
HEALTH_WATCHDOG_DOWN_AFTER), and
the slots it costs the jobs routed to that queue (`queue_jobs`: the schedule's queue, which beat
sends to, else the job's own) are grouped under it as under a beat-down incident
(`outage_slots_group`, `queue_outage_slots`): one page for the queue, not one per job. Other
queues' jobs, and failures, still page per job.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max, Q
from django.utils import timezone

from monitoring import conf
from monitoring.liveness import beat_liveness
from monitoring.models import OUTAGE_JOB, OUTAGE_KINDS, QUEUE_PREFIX, AlertDelivery, Incident
from scheduler.models import JobRun

logger = logging.getLogger(__name__)

BROKER_TIMEOUT = 3.0  # seconds for the broker to accept a connection
LOOKBACK = timedelta(days=1)  # as monitoring.alerts: older slots are no incident's any more
Kind = Incident.Kind
Status = JobRun.Status


INSPECT_TIMEOUT = 1.0  # seconds a pass waits for the workers' answers
CONFIRM_TIMEOUT = 2.0  # the second question, when a queue with work due looked unserved


# Incidents that group the slots they cost (`down_since` set): beat or broker down (every job),
# and no worker on a queue (the jobs routed to it, `incident_scope`).
GROUPING_KINDS = (*OUTAGE_KINDS, Kind.NO_WORKER)


class _State:
    """This process's memory between passes (a `--once` pass has none)."""

    broker_last_ok: datetime | None = None
    broker_ok: bool = True  # at this process's latest look
    # queue -> the last pass that found it consumed, or with no work due
    queue_last_ok: dict[str, datetime] = {}
    # queue with work due -> since when it has had no consumer, as this process timed it (its
    # clock restarts when the broker comes back: no worker could consume anything meanwhile)
    unserved_since: dict[str, datetime] = {}


def outages_evaluate(*, now: datetime | None = None, judge_beat: bool = True) -> dict[str, int]:
    """Open or resolve the beat-down and broker-down incidents, then count the slots outages
    cost into them. With `judge_beat` off (the watchdog's first minute, while a beat started
    beside it may not have stamped yet) beat is not judged. Calling it twice changes nothing."""
    now = now or timezone.now()
    config = conf.load()
    counts = {"opened": 0, "resolved": 0, "grouped": 0}
    if judge_beat:
        beat = beat_liveness()
        if beat.healthy:
            summary = f"beat is back: {beat.describe()}"
            counts["resolved"] += _resolve(Kind.BEAT_DOWN, summary, now, config)
        else:
            since = beat.last_seen or now
            detail = beat.describe()
            summary = (
                f"beat down: no heartbeat since {_when(beat.last_seen)}; no job is being sent"
                if beat.last_seen
                else "beat down: no beat has ever stamped a heartbeat; no job is being sent"
            )
            counts["opened"] += _open(Kind.BEAT_DOWN, since, summary, detail, now, config)
    error = _broker_error()
    _State.broker_ok = error is None
    if error is None:
        _State.broker_last_ok = now
        counts["resolved"] += _resolve(Kind.BROKER_DOWN, "the broker answers again", now, config)
    else:
        since = _State.broker_last_ok or now
        summary = "broker down: beat's sends and the reconciler's re-sends fail"
        counts["opened"] += _open(Kind.BROKER_DOWN, since, summary, error, now, config)
    counts["grouped"] = outage_slots_group(now=now, config=config)
    return counts


def outage_windows(
    *, since: datetime, now: datetime | None = None
) -> list[tuple[datetime, datetime]]:
    """(down_since, resolved_at or now) of every outage incident that overlaps [since, now]."""
    now = now or timezone.now()
    rows = Incident.objects.filter(kind__in=OUTAGE_KINDS, down_since__isnull=False).filter(
        Q(resolved_at=None) | Q(resolved_at__gte=since)
    )
    return [(r.down_since, r.resolved_at or now) for r in rows.order_by("down_since")]


def outage_slots(windows: list[tuple[datetime, datetime]]) -> Q:
    """Ledger rows whose slot lies in one of `windows` (matches nothing for no window)."""
    condition = Q(pk__in=[])
    for start, end in windows:
        condition |= Q(slot__gte=start, slot__lte=end)
    return condition


def outage_cost_rows(config: conf.AlertSettings) -> Q:
    """Rows an outage costs: nothing started for the slot, or a beat-sent first attempt late."""
    late = Q(
        trigger=JobRun.Trigger.BEAT,
        attempt=1,
        lateness_ms__gt=config.lateness_seconds * 1000,
    )
    return Q(status__in=(Status.MISSED, Status.EXPIRED)) | late


def queue_jobs(queue: str) -> list[str]:
    """The registered jobs whose scheduled messages go to `queue`: the schedule's queue (what
    beat sends with), else the job's own (a job with no schedule sends nothing)."""
    from django_celery_beat.models import PeriodicTask

    from scheduler.registry import all_jobs

    own = {job.name: job.queue for job in all_jobs()}
    scheduled = dict(PeriodicTask.objects.filter(name__in=list(own)).values_list("name", "queue"))
    return sorted(name for name in own if (scheduled.get(name) or own[name]) == queue)


def incident_scope(incident: Incident) -> Q:
    """The jobs whose slots an outage incident groups: every job for beat or broker down; the
    jobs routed to its queue for no worker on a queue."""
    if incident.kind == Kind.NO_WORKER:
        return Q(job__in=queue_jobs(incident.job.removeprefix(QUEUE_PREFIX)))
    return Q()


def queue_outage_slots(*, since: datetime, now: datetime | None = None) -> Q:
    """Ledger rows of a job routed to a queue, with their slot inside a no-worker incident of
    that queue that overlaps [since, now]: that incident's, not the job's own
    (monitoring.alerts leaves them out). Matches nothing when there is none."""
    now = now or timezone.now()
    condition = Q(pk__in=[])
    incidents = Incident.objects.filter(kind=Kind.NO_WORKER, down_since__isnull=False).filter(
        Q(resolved_at=None) | Q(resolved_at__gte=since)
    )
    for incident in incidents:
        end = incident.resolved_at or now
        condition |= incident_scope(incident) & Q(slot__gte=incident.down_since, slot__lte=end)
    return condition


def outage_slots_group(*, now: datetime | None = None, config: conf.AlertSettings) -> int:
    """Count the rows each outage cost (a no-worker one: its queue's jobs' rows), recorded since
    its last count, into its incident."""
    now = now or timezone.now()
    grouped = 0
    outages = Incident.objects.filter(kind__in=GROUPING_KINDS, down_since__isnull=False).filter(
        Q(resolved_at=None) | Q(resolved_at__gte=now - LOOKBACK)
    )
    for incident in outages:
        end = incident.resolved_at or now
        rows = JobRun.objects.filter(
            outage_cost_rows(config),
            incident_scope(incident),
            duplicate_of=None,
            slot__gte=incident.down_since,
            slot__lte=end,
            pk__gt=incident.last_run_id or 0,
        )
        found = rows.aggregate(n=Max("id"))["n"]
        if found is None:
            continue
        new = list(rows.filter(pk__lte=found).order_by("id").values("id", "slot"))
        first, last = new[0], new[-1]
        newest_slot = max(r["slot"] for r in new)
        updates = {
            "last_run_id": last["id"],
            "last_slot": max(newest_slot, incident.last_slot or newest_slot),
            "occurrences": incident.occurrences + len(new),
        }
        if incident.first_run_id is None:
            updates.update(first_run_id=first["id"], first_slot=min(r["slot"] for r in new))
        # Conditional on the cursor it read: a second watchdog counting at once counts once.
        won = Incident.objects.filter(pk=incident.pk, last_run_id=incident.last_run_id).update(
            **updates
        )
        if won:
            grouped += len(new)
            logger.info(
                "%s: %s more slot(s) it cost counted into it (%s in all)",
                incident.summary,
                len(new),
                updates["occurrences"],
            )
    return grouped


def queue_consumers(*, timeout: float | None = None) -> dict[str, set[str]]:
    """The workers consuming each queue, as they answer within `timeout` seconds
    (INSPECT_TIMEOUT by default)."""
    from celery import current_app as app

    wait = INSPECT_TIMEOUT if timeout is None else timeout
    replies = app.control.inspect(timeout=wait).active_queues() or {}
    consumers: dict[str, set[str]] = {}
    for worker, queues in replies.items():
        for queue in queues or []:
            consumers.setdefault(queue.get("name", ""), set()).add(worker)
    return consumers


def queues_with_work(depths: dict[str, int]) -> set[str]:
    """Queues with messages waiting, or an enabled job routed to them (its next slot will be)."""
    from django_celery_beat.models import PeriodicTask

    from scheduler.registry import all_jobs

    queue_of = {job.task: job.queue for job in all_jobs()}
    enabled = PeriodicTask.objects.filter(enabled=True, task__in=list(queue_of)).values_list(
        "task", flat=True
    )
    return {name for name, waiting in depths.items() if waiting} | {
        queue_of[task] for task in enabled.distinct()
    }


def queue_workers_evaluate(*, now: datetime | None = None) -> dict[str, int]:
    """Open a no-worker incident for each queue with work due and no consumer; resolve the ones
    whose queue has a consumer again (or no work due). Calling it twice changes nothing."""
    from celery import current_app as app

    from monitoring.queues import queue_depths, queue_names, queue_workers_publish

    now = now or timezone.now()
    counts = {"opened": 0, "resolved": 0}
    if not _State.broker_ok:
        # The broker-down incident says it all; a broadcast would only wait. Workers reconnect
        # with a growing back-off once it is back, so their absence is timed from then.
        _State.unserved_since.clear()
        _State.queue_last_ok.clear()
        return counts
    config = conf.load()
    url = app.conf.broker_url
    consumers = queue_consumers()
    depths, _ = queue_depths(url)
    due = queues_with_work(depths)
    if any(not consumers.get(name) for name in due):
        # One late answer must not page: ask once more, longer, and count either answer.
        for name, workers in queue_consumers(timeout=CONFIRM_TIMEOUT).items():
            consumers.setdefault(name, set()).update(workers)
    for name in queue_names():
        workers = sorted(consumers.get(name, ()))
        job = f"{QUEUE_PREFIX}{name}"
        if workers or name not in due:
            _State.unserved_since.pop(name, None)
            _State.queue_last_ok[name] = now
            why = f"consumed by {', '.join(workers)}" if workers else "no work due on it any more"
            counts["resolved"] += _resolve(Kind.NO_WORKER, why, now, config, job=job)
            continue
        # Paged only once the queue has stayed unserved for as long as beat may stay silent
        # (HEALTH_BEAT_DOWN_AFTER): a worker restarting, or reconnecting after a broker outage
        # (Celery's back-off reaches ~30 s), is not an outage.
        since = _State.unserved_since.setdefault(name, _queue_down_since(name, now))
        if (now - since).total_seconds() < settings.HEALTH_BEAT_DOWN_AFTER:
            continue
        waiting = depths.get(name, 0)
        summary = f"no worker on queue {name}: {waiting} message(s) waiting; its jobs do not run"
        detail = (
            f"No worker answered `inspect active_queues` for queue {name!r} (twice, within "
            f"{INSPECT_TIMEOUT:g} s and {CONFIRM_TIMEOUT:g} s); its jobs' runs wait in the broker "
            "until one does. Start a worker with `--queues " + name + "`."
        )
        counts["opened"] += _open(Kind.NO_WORKER, since, summary, detail, now, config, job=job)
    try:
        published = {name: len(consumers.get(name, ())) for name in queue_names()}
        queue_workers_publish(url, published, ttl=settings.HEALTH_WATCHDOG_DOWN_AFTER)
    except Exception as exc:  # the metric only; the incidents above are written
        logger.warning("could not publish the queue consumer counts: %s", exc)
    return counts


def _queue_down_since(name: str, now: datetime) -> datetime:
    """Since when queue `name` has had no consumer, as far as this process knows: its last pass
    that found the queue fine, or `now`. A memory older than HEALTH_WATCHDOG_DOWN_AFTER is not
    trusted (this process skipped passes: another watchdog held the lock, or the broker was
    down): its window would take in slots that belong to other incidents."""
    last_ok = _State.queue_last_ok.get(name)
    fresh = timedelta(seconds=settings.HEALTH_WATCHDOG_DOWN_AFTER)
    return last_ok if last_ok is not None and now - last_ok <= fresh else now


def _open(
    kind: str,
    since: datetime,
    summary: str,
    detail: str,
    now: datetime,
    config: conf.AlertSettings,
    *,
    job: str = OUTAGE_JOB,
) -> int:
    from monitoring.alerts import alerts_queue

    if Incident.objects.filter(job=job, kind=kind, resolved_at=None).exists():
        return 0
    try:
        with transaction.atomic():
            incident = Incident.objects.create(
                job=job,
                kind=kind,
                opened_at=now,
                down_since=since if kind in GROUPING_KINDS else None,
                occurrences=0,
                summary=summary[:255],
                detail=detail,
            )
            alerts_queue(incident, AlertDelivery.Event.OPENED, config)
    except IntegrityError:
        return 0  # another watchdog opened it first, and notifies
    logger.warning("alert: %s", incident.summary)
    return 1


def _resolve(
    kind: str,
    resolution: str,
    now: datetime,
    config: conf.AlertSettings,
    *,
    job: str = OUTAGE_JOB,
) -> int:
    from monitoring.alerts import alerts_queue

    incident = Incident.objects.filter(job=job, kind=kind, resolved_at=None).first()
    if incident is None:
        return 0
    with transaction.atomic():
        won = Incident.objects.filter(pk=incident.pk, resolved_at=None).update(
            resolved_at=now, resolution=resolution[:255]
        )
        if won:
            incident.refresh_from_db()
            alerts_queue(incident, AlertDelivery.Event.RESOLVED, config)
    if won:
        logger.info("alert resolved: %s: %s", incident.summary, resolution)
    return won


def _broker_error() -> str | None:
    """None when the broker accepts a connection, else what went wrong (one line)."""
    from celery import current_app as app

    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(
                max_retries=1, interval_start=0.5, interval_step=0.5, timeout=BROKER_TIMEOUT
            )
    except Exception as exc:
        message = (str(exc).strip().splitlines() or [""])[0]
        return f"{type(exc).__name__}: {message}"[:500]
    return None


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment else "-"
