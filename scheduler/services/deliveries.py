"""What a worker trusts: a job message is checked against the schedule and the ledger first.

Anyone who can write to the broker (any Redis client, Flower's send-task API, `celery call`) can
send a job's task with any kwargs, and the message's slot becomes the service's `now`. So before
a job message runs (`JobTask.run_job`), and before an expired one is recorded, it must name:

- a slot no later than the worker's clock plus FUTURE_TOLERANCE;
- for trigger `beat`: a fire time of one of the job's enabled crontab schedules plus its offset,
  as stored now (the same `Cron` and `effective_offset` beat and the reconciler use), attempt 1
  and no run, user or reason (beat sends none: a schedule may not name them either);
- for any other trigger (admin, api, manual, retry, reconciler): the ledger row `job_dispatch`
  wrote before it sent the message, with the same job, slot and task id (and run id, user and
  reason when the message names them). The row is `queued` on the first delivery; a redelivery
  of the same message, or the task's own retry (Celery keeps the task id), finds it running,
  lost or retrying, and the run path's claim decides as before.

A beat message that fails the schedule check only because staff changed the schedule while it
waited for its offset (beat sends at the minute boundary with a countdown) is not a forgery and
is not called one (`beat_verdict`, a decision table):

| the job's schedules now                                              | status             |
|----------------------------------------------------------------------|--------------------|
| an enabled one fires at the slot (its cron + offset)                 | runs               |
| a disabled one fires at the slot, or changed while the message waited | `skipped_disabled` |
| an enabled one changed (cron, offset) while the message waited       | `superseded`       |
| anything else                                                        | `refused`          |

"Changed while the message waited": the schedule's `tracked_since` (stamped at every change of
cron, offset or enabled) lies after the slot's boundary (the slot floored to the minute: beat sent
it then, as offsets are whole seconds below 60) and no later than the message could still have
been waiting (boundary + 59 s + the job's starting deadline, its expiry). A forged message can
only earn `superseded` for the minute(s) just before a real change; like a refused one, it runs
nothing and claims nothing. Every turned-away delivery (`JobRun.NOT_ADMITTED`) is recorded with
its status and, in `error`, why; it claims no slot (`JobRun.SLOT_OWNERS`), so a forged message
naming a real future slot does not keep the real run out of it, and a superseded one leaves the
slot to whatever the new settings send. What a message claimed about a user and a reason is not
trusted enough to be stored in those columns; it is quoted in `error`.

Disable means stop for every run the schedule asked for, not only beat's own messages
(`schedule_disabled`, one rule for both): a reconciler re-send (a slot nobody ran, a lost
attempt, a late run that waits for its own free second: scheduler.services.catchup) and a
`retry` of a beat or reconciler run are checked too, at run time, against the schedule as stored
now. When none of the job's crontab schedules is enabled any more (disabled, or removed) the
delivery is recorded `skipped_disabled` and runs nothing; its `queued` ledger row becomes that
row (so the reconciler does not later call it `missed`). A re-send or retry whose schedule is
enabled again by then runs. Runs staff asked for explicitly (trigger admin, api or manual, and
the retries and re-sends of such a run) are not schedule runs: they run whether the schedule
is enabled or not, as "run now" on a paused job does in Oban, Sidekiq and Temporal; the ledger
row says who asked and why.

`manage.py runjob --sync` calls the run path in-process, with no message, so nothing to check.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import QuerySet
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from scheduler.cron import Cron, CronError
from scheduler.ledger import run_skip_queued, run_turn_away
from scheduler.models import JobRun
from scheduler.own_schedule import OwnSchedule, own_schedule_read, own_schedule_seen
from scheduler.registry import Job
from scheduler.services.runs import Delivery
from scheduler.services.schedules import effective_offset

Status = JobRun.Status
# How far ahead of the worker's clock a slot may lie. Beat's messages carry an absolute ETA equal
# to their slot, so a worker starts them at or after it on its own clock; a dispatched run's slot
# is the web host's clock, floored to the second. 5 s covers clock skew between NTP-synced hosts
# (milliseconds) with a wide margin, and is far below the smallest gap between two fire times (a
# minute) and any period a money job closes, so it cannot move a run into a later slot; and the
# run path never gives a service a `now` past the wall clock (`job_execute`).
FUTURE_TOLERANCE = timedelta(seconds=5)
# Beat may send a boundary's messages a few ms early (scheduler.schedulers.SEND_TOLERANCE), under
# the settings it read then: a change committed that close before the boundary may still have
# been overtaken by the message.
CHANGE_TOLERANCE = timedelta(seconds=2)


@dataclass(frozen=True)
class Verdict:
    """Why a delivery must not run, and the status its ledger row records."""

    status: str  # one of JobRun.NOT_ADMITTED
    error: str


def delivery_verdict(delivery: Delivery, *, now: datetime) -> Verdict | None:
    """None when the message names a really due slot; otherwise what it is and why."""
    if delivery.slot > now + FUTURE_TOLERANCE:
        return Verdict(
            Status.REFUSED,
            f"slot {delivery.slot.isoformat()} lies in the future "
            f"({(delivery.slot - now).total_seconds():.0f} s after the worker's clock)",
        )
    if delivery.trigger == JobRun.Trigger.BEAT:
        return beat_verdict(delivery)
    if delivery.trigger not in JobRun.Trigger.values:
        error = f"trigger {delivery.trigger!r} is not one of {', '.join(JobRun.Trigger.values)}"
        return Verdict(Status.REFUSED, error)
    error = _dispatched_refusal(delivery)
    if error is not None:
        skipped = _skipped_row(delivery)
        if skipped is not None:  # a redelivery of a message skipped before: skipped still
            return Verdict(Status.SKIPPED_DISABLED, skipped.error)
        return Verdict(Status.REFUSED, error)
    if _asked_by_staff(delivery):
        return None
    disabled = schedule_disabled(delivery.job)
    if disabled is None:
        return None
    return Verdict(
        Status.SKIPPED_DISABLED,
        f"{disabled}: this {delivery.trigger} delivery of slot {delivery.slot.isoformat()} "
        f"(attempt {delivery.attempt}) was queued before that",
    )


# Triggers of runs staff asked for: they run whatever the schedule's state (the module's doc).
STAFF_TRIGGERS = frozenset({JobRun.Trigger.ADMIN, JobRun.Trigger.API, JobRun.Trigger.MANUAL})


def _job_schedules(job: Job) -> QuerySet[PeriodicTask]:
    """The job's crontab schedules (the row `schedules apply` made, and any staff added)."""
    return PeriodicTask.objects.filter(task=job.task, crontab__isnull=False)


def schedule_disabled(job: Job) -> str | None:
    """Why the schedule no longer asks for runs of `job` (none of its crontab schedules is
    enabled), or None while one is. The rule every schedule-driven delivery is checked against
    (beat's through `beat_verdict`'s table, re-sends and retries here)."""
    states = dict(_job_schedules(job).values_list("name", "enabled"))
    if any(states.values()):
        return None
    if states:
        return f"schedule {min(states)!r} is disabled"
    return f"job {job.name!r} has no schedule any more"


def _asked_by_staff(delivery: Delivery) -> bool:
    """Whether the run is one staff asked for: its trigger, or for a retry or a reconciler
    re-send its first attempt's. A Celery retry keeps the task id, so its first attempt is the
    row with that id; a re-send after a lost attempt is a later attempt of the same slot, so its
    first attempt is the slot's earliest earlier attempt. A re-send of a slot nobody ran
    (attempt 1) has no earlier row: it is the schedule's."""
    if delivery.trigger not in (JobRun.Trigger.RETRY, JobRun.Trigger.RECONCILER):
        return delivery.trigger in STAFF_TRIGGERS
    earlier = JobRun.objects.filter(job=delivery.job.name, slot=delivery.slot)
    if delivery.trigger == JobRun.Trigger.RETRY:
        earlier = earlier.filter(task_id=delivery.task_id)
    else:
        earlier = earlier.filter(attempt__lt=delivery.attempt)
    origin = (
        earlier.exclude(trigger__in=[JobRun.Trigger.RETRY, JobRun.Trigger.RECONCILER])
        .order_by("attempt", "id")
        .values_list("trigger", flat=True)
        .first()
    )
    return origin in STAFF_TRIGGERS


def delivery_refusal(delivery: Delivery, *, now: datetime) -> str | None:
    """Why this job message must not run (whatever its status), or None when it may."""
    verdict = delivery_verdict(delivery, now=now)
    return None if verdict is None else verdict.error


def beat_verdict(delivery: Delivery) -> Verdict | None:
    """The decision table of the module's docstring for a `beat` message."""
    shape = _beat_shape_error(delivery)
    if shape is not None:
        return Verdict(Status.REFUSED, shape)
    if _admits(own_schedule_read(delivery.job), delivery.slot):
        return None
    schedules = _job_schedules(delivery.job).select_related("crontab", "job_schedule")
    # Beat sent the message at its boundary, with a countdown of the offset it had then (0-59 s).
    sent_at = delivery.slot.replace(second=0, microsecond=0)
    # After this, Celery no longer runs beat's message (its `expires`): a later change did not
    # overtake it.
    waited_until = sent_at + timedelta(seconds=59 + delivery.job.starting_deadline)
    disabled: str | None = None
    changed: str | None = None
    # The row `schedules apply` made is named after the job: found by its unique index. Other
    # rows of the job (staff may add some) need a scan of the table (~7 ms at 10,000 schedules),
    # which only their own runs and turned-away messages pay.
    named = delivery.job.name
    for rows in (schedules.filter(name=named), schedules.exclude(name=named)):
        for schedule in rows:
            tracking = getattr(schedule, "job_schedule", None)
            offset = effective_offset(getattr(tracking, "offset_seconds", 0))
            try:
                fires = Cron.from_model(schedule.crontab).fires_at(
                    delivery.slot - timedelta(seconds=offset)
                )
            except CronError:
                fires = False  # a broken crontab row fires nothing (beat leaves it out too)
            if schedule.enabled and fires:
                return None
            since = getattr(tracking, "tracked_since", None)
            overtaken = since is not None and sent_at - CHANGE_TOLERANCE < since <= waited_until
            if not schedule.enabled and (fires or overtaken):
                disabled = disabled or schedule.name
            elif schedule.enabled and overtaken:
                changed = changed or f"{schedule.name} at {since.isoformat()}"
    if disabled:
        return Verdict(
            Status.SKIPPED_DISABLED,
            f"schedule {disabled!r} is disabled: slot {delivery.slot.isoformat()} was sent "
            "before staff disabled it",
        )
    if changed:
        return Verdict(
            Status.SUPERSEDED,
            f"slot {delivery.slot.isoformat()} is no longer a fire time plus offset: schedule "
            f"{changed} changed after beat sent it",
        )
    return Verdict(
        Status.REFUSED,
        f"slot {delivery.slot.isoformat()} is not a fire time plus offset of any enabled "
        f"schedule of job {delivery.job.name!r}",
    )


def _beat_shape_error(delivery: Delivery) -> str | None:
    """What a `beat` message carries that beat never sends."""
    if delivery.run_id is not None or delivery.user_id is not None or delivery.reason:
        return "a beat message names no run, user or reason; this one does"
    if delivery.attempt != 1:
        return f"a beat message is attempt 1; this one says {delivery.attempt}"
    return None


def _admits(schedule: OwnSchedule | None, slot: datetime) -> bool:
    """Whether the job's own schedule, as read, is enabled with `slot` as a fire time plus its
    offset: the question every beat run asks first (scheduler.own_schedule). Every other
    answer, and every other schedule row of the job, goes through `beat_verdict`'s table."""
    if schedule is None or not schedule.enabled:
        return False
    cron = Cron(
        schedule.minute,
        schedule.hour,
        schedule.day_of_month,
        schedule.month_of_year,
        schedule.day_of_week,
        timezone=schedule.timezone,
    )
    try:
        return cron.fires_at(slot - timedelta(seconds=effective_offset(schedule.offset)))
    except CronError:  # a broken crontab row fires nothing (beat leaves it out too)
        return False


def delivery_guard(delivery: Delivery, *, now: datetime) -> OwnSchedule | None:
    """The job's own schedule as this worker last read it, when it admits this beat message
    without asking the database; the claim statement then checks that it still reads so
    (scheduler.own_schedule). None: the message goes through `delivery_admit`."""
    if delivery.trigger != JobRun.Trigger.BEAT or delivery.slot > now + FUTURE_TOLERANCE:
        return None
    if _beat_shape_error(delivery) is not None:
        return None
    seen = own_schedule_seen(delivery.job)
    return seen if _admits(seen, delivery.slot) else None


def _dispatched_refusal(delivery: Delivery) -> str | None:
    rows = JobRun.objects.filter(
        JobRun.SLOT_OWNERS,
        job=delivery.job.name,
        slot=delivery.slot,
        task_id=delivery.task_id,
    )
    if delivery.run_id is not None:
        rows = rows.filter(pk=delivery.run_id)
    row = rows.order_by("-attempt").only("user_id", "reason").first()
    if row is None or not delivery.task_id:
        return (
            f"no ledger row for job {delivery.job.name!r}, slot {delivery.slot.isoformat()} and "
            "this task id: a run other than beat's is sent only by job_dispatch (admin, API, "
            "runjob, retry, reconciler), which writes that row first"
        )
    if delivery.user_id not in (None, row.user_id) or delivery.reason not in ("", row.reason):
        return f"user or reason differ from those of run {row.pk}, which this message names"
    return None


def delivery_refuse(
    delivery: Delivery,
    *,
    error: str,
    now: datetime | None = None,
    status: str = Status.REFUSED,
) -> JobRun:
    """Record a delivery turned away (`status`: one of JobRun.NOT_ADMITTED); it claims no slot
    and runs nothing."""
    claimed = ""
    if delivery.user_id is not None or delivery.reason:
        claimed = f" (the message claimed user {delivery.user_id!r}, reason {delivery.reason!r})"
    trigger = delivery.trigger
    if trigger not in JobRun.Trigger.values:
        trigger = JobRun.Trigger.MANUAL  # not beat, whatever it is; the value is in `error`
    prefix = {Status.REFUSED: "refused"}.get(status, status.replace("_", " "))
    return run_turn_away(
        job=delivery.job.name,
        slot=delivery.slot,
        attempt=min(max(delivery.attempt, 1), 32767),
        status=status,
        trigger=trigger,
        task_id=delivery.task_id[:255],
        worker=delivery.worker[:255],
        now=now or timezone.now(),
        error=f"{prefix}: {error}{claimed}"[:4000],
    )


def delivery_admit(delivery: Delivery) -> JobRun | None:
    """None when the message may run; otherwise its ledger row (refused, skipped_disabled or
    superseded)."""
    now = timezone.now()
    verdict = delivery_verdict(delivery, now=now)
    if verdict is None:
        return None
    if verdict.status == Status.SKIPPED_DISABLED and delivery.trigger != JobRun.Trigger.BEAT:
        skipped = _queued_row_skip(delivery, error=verdict.error, now=now) or _skipped_row(delivery)
        if skipped is not None:
            return skipped
    return delivery_refuse(delivery, error=verdict.error, now=now, status=verdict.status)


def _skipped_row(delivery: Delivery) -> JobRun | None:
    """The row an earlier delivery of this same message (task id, attempt) was skipped as."""
    if not delivery.task_id:
        return None
    return JobRun.objects.filter(
        job=delivery.job.name,
        slot=delivery.slot,
        task_id=delivery.task_id,
        attempt=delivery.attempt,
        status=Status.SKIPPED_DISABLED,
    ).first()


def _queued_row_skip(delivery: Delivery, *, error: str, now: datetime) -> JobRun | None:
    """The dispatched run's own `queued` row, turned `skipped_disabled` (None when it is not
    queued: a retry's or a redelivery's row, which keep theirs; the skip is then a row of its
    own). Conditional on `queued`, so a second delivery of the message skips it once."""
    rows = JobRun.objects.filter(
        JobRun.SLOT_OWNERS,
        job=delivery.job.name,
        slot=delivery.slot,
        task_id=delivery.task_id,
        status=Status.QUEUED,
    )
    if delivery.run_id is not None:
        rows = rows.filter(pk=delivery.run_id)
    row = rows.first()
    if row is None:
        return None
    return row if run_skip_queued(row, worker=delivery.worker, error=error, now=now) else None
