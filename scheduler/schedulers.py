"""Beat's scheduler: django-celery-beat's DatabaseScheduler, extended at its seams.

- `JobEntry` sends a job with `countdown` up to its slot (minute boundary + offset), an `expires`
  at the job's starting deadline, and the job name and slot in headers and kwargs.
- Rows that beat could not send (malformed JSON, a cron that never fires, an unknown task) are
  left out of the heap and logged, instead of blocking every other entry until the next resync.
- At start it waits for PostgreSQL (celery beat would exit on a database error while loading the
  schedule) and logs the offset distribution and any collisions.
- Every tick stamps beat's heartbeat row (scheduler.heartbeat).

Beat only sends: the reconciler and alerts run in the watchdog (`manage.py watchdog`,
monitoring.watchdog), so that a dead or stuck beat is reported by a process that is not itself, and
a slow database or alert channel never delays a send.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from celery import schedules
from django.db import DatabaseError, connection
from django_celery_beat.schedulers import DatabaseScheduler, ModelEntry
from kombu.exceptions import OperationalError as KombuOperationalError

from scheduler.collisions import analyse
from scheduler.cron import Cron
from scheduler.heartbeat import beat_heartbeat_stamp
from scheduler.registry import job_for_task
from scheduler.services.catchup import catch_up_release, catch_up_start, is_late
from scheduler.services.schedules import effective_offset, enabled_plans, schedule_problems

logger = logging.getLogger(__name__)
DATABASE_WAIT_CAP = 30.0
SEND_TOLERANCE = timedelta(seconds=2)  # beat may fire a few ms before the boundary


class JobEntry(ModelEntry):
    def __init__(self, model: Any, app: Any = None) -> None:
        super().__init__(model, app=app)
        self.job = job_for_task(model.task)
        schedule = getattr(model, "job_schedule", None)
        self.offset = schedule.offset_seconds if schedule is not None else 0
        self.cron = Cron.from_model(model.crontab) if model.crontab_id else None

    def is_due(self) -> schedules.schedstate:
        try:
            return super().is_due()
        except Exception:
            # One broken entry must never stop the heap: look at it again in a minute.
            logger.exception("schedule %s cannot be evaluated; skipping it", self.name)
            return schedules.schedstate(False, 60.0)

    def prepared(self, now: datetime) -> JobEntry | None:
        """A copy whose options and kwargs carry this send's slot, countdown and expiry; None
        when a late send (beat started after its slot) finds no free second within the job's
        starting deadline, or was sent already (scheduler.services.catchup)."""
        if self.job is None or self.cron is None:
            return self
        offset = effective_offset(self.offset)
        boundary = self.cron.latest_fire_time(now + SEND_TOLERANCE) or now
        slot = boundary + timedelta(seconds=offset)
        start = slot
        if is_late(slot, now):
            # Beat's catch-up at start: at the job's own second, one start per second.
            start = catch_up_start(
                schedule_name=self.name,
                job_name=self.job.name,
                offset=offset,
                slot=slot,
                deadline=timedelta(seconds=self.job.starting_deadline),
                now=now,
                beat_running=True,
            )
            if start is None:
                logger.info("%s: late slot %s not sent (sent, or no free second)", self.name, slot)
                return None
        entry = object.__new__(type(self))  # copy.copy would go through __reduce__ and re-init
        entry.__dict__.update(self.__dict__)
        entry.slot = slot
        entry.late_start = start if start != slot else None
        entry.options = {
            **self.options,
            "countdown": max(0.0, (start - now).total_seconds()),
            "expires": slot + timedelta(seconds=self.job.starting_deadline),
            "headers": {
                **self.options.get("headers", {}),
                "job": self.job.name,
                "slot": slot.isoformat(),
            },
        }
        # Only what the run path reads: a schedule's own kwargs are refused at save and at load.
        entry.kwargs = {"slot": slot.isoformat(), "trigger": "beat"}
        return entry

    def save(self) -> None:
        """Write beat's bookkeeping (last run, run count) as a plain UPDATE of those columns.

        django-celery-beat saves the whole model re-read from the database, which runs the
        pre_save validators (scheduler.signals) on whatever is in the row now: a row poisoned
        after beat loaded it (bad JSON, an unknown task, written with SQL) raised
        ValidationError out of `sync` and `tick`, and beat exited. Its save marks the row
        `no_changes` so as not to signal a schedule change; an UPDATE sends no signal at all.
        """
        type(self.model)._default_manager.filter(pk=self.model.pk).update(
            last_run_at=self.model.last_run_at, total_run_count=self.model.total_run_count
        )


class JobScheduler(DatabaseScheduler):
    Entry = JobEntry

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if not kwargs.get("lazy"):
            _DatabaseWait.until_reachable()
        super().__init__(*args, **kwargs)

    def enabled_models_qs(self) -> Any:
        return super().enabled_models_qs().select_related("crontab", "job_schedule")

    def all_as_schedule(self) -> dict[str, JobEntry]:
        registered = set(self.app.tasks.keys())
        entries: dict[str, JobEntry] = {}
        try:
            models = self.enabled_models()
        except DatabaseError:
            raise  # beat's own handling: a lost database is waited for, not hidden
        except Exception:
            # Rows no query can read (a crontab with a timezone nobody knows breaks the hour
            # window django-celery-beat computes): keep sending what was loaded before.
            logger.exception("schedules cannot be read; beat keeps the ones it had")
            return dict(self._schedule or {})
        for model in models:
            problems = schedule_problems(model, registered)
            if problems:
                logger.error(
                    "schedule %s is not sent until fixed: %s", model.name, "; ".join(problems)
                )
                continue
            try:
                entries[model.name] = self.Entry(model, app=self.app)
            except Exception:
                logger.exception("schedule %s cannot be loaded; skipping it", model.name)
        return entries

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any):
        if isinstance(entry, JobEntry):
            prepared = entry.prepared(self.app.now())
            if prepared is None:
                if advance:
                    self.reserve(entry)
                return None
            entry = prepared
        try:
            return super().apply_async(entry, producer, advance, **kwargs)
        except Exception:
            late = getattr(entry, "late_start", None)
            if late is not None:  # never sent: the reconciler may send the slot late instead
                with contextlib.suppress(DatabaseError):
                    catch_up_release(second=late, job_name=entry.job.name, slot=entry.slot)
            raise

    def setup_schedule(self) -> None:
        super().setup_schedule()
        try:
            log_stagger()
        except DatabaseError:
            logger.exception("could not read schedules to log their offsets")

    def _ensure_connected(self) -> Any:
        # Celery retries beat's first broker connection `broker_connection_max_retries` times
        # (100, minutes on end) inside beat's loop: a beat that starts during a broker outage
        # would neither send nor stamp its heartbeat until the broker is back. One short try
        # instead; a tick that cannot connect is logged (`tick` below) and tried again at the
        # next one, and the watchdog's reconciler accounts for what was due meanwhile.
        return self.connection.ensure_connection(
            max_retries=1, interval_start=1, interval_step=1, interval_max=1
        )

    def tick(self, *args: Any, **kwargs: Any) -> float:
        beat_heartbeat_stamp()  # one upsert every few seconds at most; never raises
        try:
            delay = super().tick(*args, **kwargs)
        except KombuOperationalError as exc:
            # Raised by the first send's connection (`_ensure_connected`); the entry was already
            # advanced, as for any failed send, and its slot is the reconciler's to account for.
            logger.error("beat cannot reach the broker (%s); trying again at the next tick", exc)
            delay = 1.0
        return delay


class _DatabaseWait:
    """Block beat's start until PostgreSQL answers.

    Beat loads its schedule from the database as it builds its scheduler and exits on any error
    there, so a beat started (or restarted by its supervisor) during a database outage would die
    instead of firing as soon as the database is back. Once running, it survives a lost
    connection (fault 10 of the chaos suite).
    """

    waiting = False

    @classmethod
    def until_reachable(cls) -> None:
        if cls.waiting:
            # Re-entered from beat's SIGTERM/SIGINT handler, which builds a scheduler to sync it.
            logger.warning("beat stopped while waiting for PostgreSQL")
            raise SystemExit(0)
        cls.waiting = True
        try:
            delay = 1.0
            while True:
                try:
                    connection.ensure_connection()
                    return
                except DatabaseError as exc:
                    reason = (str(exc).strip() or type(exc).__name__).splitlines()[0]
                    logger.warning(
                        "beat waits for PostgreSQL (%s); next try in %.0f s", reason, delay
                    )
                    connection.close()
                time.sleep(delay)
                delay = min(delay * 2, DATABASE_WAIT_CAP)
        finally:
            cls.waiting = False


def log_stagger() -> None:
    plans = enabled_plans()
    by_second: dict[int, list[str]] = defaultdict(list)
    for plan in plans:
        by_second[plan.offset].append(plan.name)
    for second, names in sorted(by_second.items()):
        logger.info("offset :%02d  %s", second, ", ".join(sorted(names)))
    report = analyse(plans)
    if report.ok:
        logger.info("no two jobs start in the same second (peak %s per second)", report.peak)
    for collision in report.collisions:
        logger.warning(
            "collision at offset %s: %s start together in %s seconds a week, first %s",
            collision.offset,
            ", ".join(collision.jobs),
            collision.seconds,
            collision.first.isoformat(),
        )
