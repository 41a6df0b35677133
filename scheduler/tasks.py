"""Celery tasks: one per registered job, all thin shells around the run path.

Task names come from each job's declaration (explicit and stable, so messages queued before a
deploy still run after it). Every parameter has a default for the same reason.
"""

from __future__ import annotations

import contextlib
import logging
import select
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from celery import Task, shared_task
from celery import current_app as app
from celery.signals import task_revoked
from django.db import close_old_connections, connection
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from scheduler.registry import Job, all_jobs, job_for_task
from scheduler.results import STORED_WITH_RUN, JobResultBackend, job_result_backend

if TYPE_CHECKING:
    from scheduler.services.runs import Delivery

logger = logging.getLogger(__name__)
# Slots a message may name at all (a datetime near year 1 or 9999 overflows on arithmetic or on
# its way to UTC); the worker's checks judge the ones in between.
_SLOTS_FROM = datetime(2000, 1, 1, tzinfo=UTC)
_SLOTS_UNTIL = datetime(9999, 1, 1, tzinfo=UTC)


@shared_task(name="scheduler.ping")
def ping() -> str:
    """Round trip through broker, worker and result backend (health checks, tests)."""
    return "pong"


def _parse_slot(raw: object) -> datetime:
    moment = parse_datetime(raw) if isinstance(raw, str) else None
    if moment is None or moment.tzinfo is None:
        raise ValueError(f"slot {raw!r} is not an ISO 8601 datetime with a timezone")
    return moment


def _delivery(
    job: Job, kwargs: dict[str, Any], *, task_id: str, worker: str
) -> tuple[Delivery, str]:
    """The message's delivery, and what is malformed in it ("" when nothing is).

    Celery checks the names of a message's kwargs, not their types, and the broker accepts any
    JSON: a malformed message is recorded as refused under a delivery made of what could be
    read (its slot the worker's clock when it has none)."""
    from scheduler.services.runs import Delivery

    problems = []
    try:
        slot = _parse_slot(kwargs.get("slot"))
        if not _SLOTS_FROM <= slot.astimezone(UTC) < _SLOTS_UNTIL:
            raise ValueError(f"slot {slot.isoformat()} is outside the years 2000-9998")
    except (ValueError, TypeError, OverflowError) as exc:  # out-of-range fields raise too
        problems.append(str(exc) or f"slot {kwargs.get('slot')!r} is not a valid datetime")
        slot = timezone.now()
    # name: (type, default, largest value: the column's)
    typed = {
        "trigger": (str, "beat", None),
        "attempt": (int, 1, 32767),
        "run_id": (int, None, 2**63 - 1),
        "user_id": (int, None, 2**31 - 1),
        "reason": (str, "", None),
    }
    values: dict[str, Any] = {}
    for name, (kind, default, largest) in typed.items():
        value = kwargs.get(name, default)
        ok = value is None and default is None
        ok = ok or (isinstance(value, kind) and not isinstance(value, bool))
        if ok and largest is not None and value is not None and not 1 <= value <= largest:
            ok = False
        if not ok:
            problems.append(f"{name} {value!r} is not a {kind.__name__} in range")
            value = default
        values[name] = value
    values["trigger"] = values["trigger"][:20]
    values["reason"] = values["reason"][:255]
    delivery = Delivery(job=job, slot=slot, task_id=task_id, worker=worker, **values)
    return delivery, "; ".join(problems)


def _drop_dead_connection() -> None:
    """`close_old_connections()`, with its health check done without a round trip.

    CELERY_DB_REUSE_MAX keeps the connection across tasks, and with CONN_HEALTH_CHECKS Django
    checks a reused connection with a `SELECT 1` before its first query in every task: one more
    round trip per run. A connection that sat idle between two tasks has nothing to read unless
    the server wrote to it, and a backend that goes away (PostgreSQL restarting or shut down,
    `pg_terminate_backend`, an idle timeout, a crashed backend's restart of the others) sends an
    error and/or closes its socket, which makes it readable. So: readable (or unpollable) means
    close it and reconnect on the first query; quiet means healthy and the SELECT 1 is skipped. A
    silent network loss is caught by neither (the SELECT 1 would hang on it as the claim does).
    """
    close_old_connections()
    raw = connection.connection
    if raw is None or not connection.health_check_enabled or connection.health_check_done:
        return
    try:
        poller = select.poll()
        poller.register(raw.fileno(), select.POLLIN | select.POLLPRI)
        quiet = not poller.poll(0)
    except Exception:  # a closed or broken connection has no usable socket
        quiet = False
    if quiet:
        connection.health_check_done = True
    else:
        with contextlib.suppress(Exception):
            connection.close()


class JobTask(Task):
    """Celery options shared by every job task: acknowledge late, re-run work lost with a worker."""

    acks_late = True
    reject_on_worker_lost = True
    # The ledger row says `running` already; a STARTED result row would cost writes per run.
    track_started = False
    typing = True
    job: Job

    @property
    def backend(self) -> Any:  # type: ignore[override]
        """django-celery-results' table, written in one statement (scheduler.results)."""
        if self._backend is None:
            self._backend = job_result_backend(self.app)
        return self._backend

    @backend.setter
    def backend(self, value: Any) -> None:
        self._backend = value

    def run_job(
        self,
        slot: str | None = None,
        trigger: str = "beat",
        attempt: int = 1,
        run_id: int | None = None,
        user_id: int | None = None,
        reason: str = "",
        unexpected: str = "",
    ) -> dict[str, Any]:
        """`unexpected`: what else the message carried (`_make_task`), refused as malformed."""
        from scheduler.own_schedule import GuardFailed, own_schedule_forget
        from scheduler.services.deliveries import delivery_admit, delivery_guard, delivery_refuse
        from scheduler.services.runs import job_execute

        # CELERY_DB_REUSE_MAX keeps connections across tasks; drop one that died meanwhile (a
        # PostgreSQL restart) instead of failing this run on it, as Django does per request.
        _drop_dead_connection()
        message = {"slot": slot, "trigger": trigger, "attempt": attempt, "run_id": run_id}
        message.update(user_id=user_id, reason=reason)
        delivery, malformed = _delivery(
            self.job, message, task_id=self.request.id or "", worker=self.request.hostname or ""
        )
        malformed = "; ".join(problem for problem in (malformed, unexpected) if problem)
        # A message is checked against the schedule and the ledger before it may run; a refusal
        # is an outcome (its ledger row), not an error: nothing to retry. A beat message that the
        # job's own schedule, as this worker last read it, admits is claimed with that schedule
        # as a guard instead, which the claim statement re-checks (scheduler.own_schedule).
        guard = None if malformed else delivery_guard(delivery, now=timezone.now())
        if guard is None:
            refused = (
                delivery_refuse(delivery, error=malformed)
                if malformed
                else delivery_admit(delivery)
            )
            if refused is not None:
                return self._turned_away(refused)
        writer = self._result_writer()
        delivery = replace(delivery, store_with_success=writer)
        try:
            outcome = job_execute(replace(delivery, guard=guard))
        except GuardFailed:
            # The schedule changed since this worker read it (or the slot has a row): admit the
            # message on what is stored now, as if nothing had been remembered.
            own_schedule_forget(self.job)
            refused = delivery_admit(delivery)
            if refused is not None:
                return self._turned_away(refused)
            outcome = job_execute(delivery)
        kwargs = {"slot": delivery.slot.isoformat(), "user_id": user_id, "reason": reason}
        if outcome.wait_in is not None:
            # Same message as a running attempt: its first worker may be dead. Look again once
            # its heartbeat would have gone stale.
            raise self.retry(
                kwargs={**kwargs, "trigger": trigger, "attempt": attempt},
                countdown=outcome.wait_in,
                max_retries=None,
            )
        if outcome.retry_in is not None:
            raise self.retry(
                kwargs={**kwargs, "trigger": "retry", "attempt": outcome.run.attempt + 1},
                countdown=outcome.retry_in,
                max_retries=None,
            )
        run = outcome.run
        if writer is not None and writer.built and run.status == run.Status.SUCCEEDED:
            setattr(self.request, STORED_WITH_RUN, True)
        return _returned(run)

    def _turned_away(self, row: Any) -> dict[str, Any]:
        logger.warning("job %s: message %s %s", self.job.name, row.task_id, row.error)
        return _returned(row)

    def _result_writer(self) -> _ResultWriter | None:
        """The Celery result's row, for the run path to write with the success (one commit)."""
        backend = self.backend
        if not isinstance(backend, JobResultBackend) or self.request.ignore_result:
            return None
        return _ResultWriter(backend, self.request)


class _ResultWriter:
    """Builds the result row for the success statement and remembers whether it could: when
    the seam cannot build it (scheduler.results), Celery stores the result after the task."""

    def __init__(self, backend: JobResultBackend, request: Any) -> None:
        self.backend, self.request, self.built = backend, request, False

    def __call__(self, run: Any) -> tuple[str, dict[str, Any]] | None:
        row = self.backend.success_row(self.request.id, _returned(run), self.request)
        self.built = row is not None
        return row


def _returned(run: Any) -> dict[str, Any]:
    """What a job task returns (and Celery stores as its result)."""
    return {"run_id": run.pk, "job": run.job, "status": run.status, "result": run.result}


def _make_task(job: Job) -> Task:
    # Any arguments: a message with others (`celery call --args`, Flower's send-task) is
    # refused with its ledger row naming them, where a TypeError would reach only Flower.
    def run(self: JobTask, *args: Any, **kwargs: Any) -> dict[str, Any]:
        from scheduler.services.schedules import RESERVED_KWARGS  # run_job's parameters

        known = {name: kwargs.pop(name) for name in RESERVED_KWARGS if name in kwargs}
        others = [f"positional argument {value!r}"[:100] for value in args]
        others += [f"argument {name!r}"[:100] for name in sorted(kwargs)]
        unexpected = f"{', '.join(others)} not taken by a job" if others else ""
        return self.run_job(**known, unexpected=unexpected)

    run.__name__ = job.task.replace(".", "_")
    run.__doc__ = job.description
    return app.task(
        run,
        name=job.task,
        base=JobTask,
        bind=True,
        job=job,
        queue=job.queue,
        priority=job.priority,
        time_limit=job.time_limit,
        soft_time_limit=job.soft_time_limit,
    )


def register_job_tasks() -> None:
    for job in all_jobs():
        if job.task not in app.tasks or getattr(app.tasks[job.task], "job", None) != job:
            _make_task(job)


@task_revoked.connect
def _record_expired(request: Any = None, expired: bool = False, **_: Any) -> None:
    """A job message that expired before a worker ran it is recorded as `expired`; one that
    would have been refused is recorded `refused` (an expired forgery must not fill a slot)."""
    if not expired or request is None:
        return
    job = job_for_task(getattr(request, "task", "") or getattr(request, "name", ""))
    if job is None:
        return
    from django.db import IntegrityError

    from scheduler.ledger import run_expire
    from scheduler.services.deliveries import delivery_admit, delivery_refuse

    kwargs = getattr(request, "kwargs", None) or {}
    delivery, malformed = _delivery(
        job,
        kwargs,
        task_id=getattr(request, "id", "") or "",
        worker=getattr(request, "hostname", "") or "",
    )
    if malformed:
        delivery_refuse(delivery, error=malformed)
        return
    if delivery_admit(delivery) is not None:
        return
    # IntegrityError: the slot already has its row (a later delivery ran or accounted for it).
    with contextlib.suppress(IntegrityError):
        run_expire(
            job=job.name,
            slot=delivery.slot,
            trigger=delivery.trigger,
            task_id=delivery.task_id,
            now=timezone.now(),
            error="the message expired before a worker ran it",
        )
