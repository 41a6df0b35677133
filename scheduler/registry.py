"""The job registry: each app declares its jobs in its own `jobs.py`; the scheduler reads them here.

A job is a name operators use (kebab-case), an explicit Celery task name (stable across refactors,
so queued messages still run after a deploy), the service that does the work (the function itself,
imported at the top of the app's `jobs.py`, so a rename fails at import and readers and tools can
follow the call), and its policy:
production cron (5 fields, UTC), default second offset, queue, priority, lock TTL, retries and
starting deadline. The scheduler knows nothing about games or referrals: it imports each installed
app's `jobs` module and reads what they registered.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from importlib import import_module
from typing import Any

from django.conf import settings
from django.utils.module_loading import autodiscover_modules

from core.backoff import backoff
from scheduler.budget import Budget
from scheduler.validators import OFFSET_MAX, OFFSET_MIN, is_offset

JOB_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
QUEUES = ("default", "long")

# A service takes the run's moment (the slot, UTC) and returns counts for the ledger row.
Service = Callable[..., dict[str, Any]]


class RegistryError(ValueError):
    """A job declaration is invalid; the message names the job and the field."""


@dataclass(frozen=True)
class RetryPolicy:
    """Retries for transient errors: `base * 2**n` seconds, capped, plus up to `jitter` of it
    (`core.backoff.backoff`)."""

    retry_on: tuple[type[BaseException], ...] = ()
    max_retries: int = 3
    backoff_base: int = 60
    backoff_cap: int = 24 * 3600
    jitter: float = 0.2

    def delay(self, retries: int, random: Callable[[], float]) -> float:
        """Seconds before retry number `retries + 1`; `random` returns a float in [0, 1)."""
        return backoff(
            retries + 1,
            base=self.backoff_base,
            cap=self.backoff_cap,
            jitter=self.jitter,
            random=random,
        )


@dataclass(frozen=True)
class Job:
    name: str
    task: str
    service: Service  # the function itself, e.g. `prize_pool_finalise_due`
    cron: str  # production schedule: 5 fields, UTC
    offset: int  # default second offset, 0..59
    description: str
    queue: str = "default"
    priority: int = 5  # 0 (highest) .. 9, Redis emulates priorities per queue
    lock_ttl: int = 300  # seconds a lease lives without a heartbeat
    time_limit: int = 1800  # hard limit of one run, seconds (Celery kills the run after it)
    # Celery's soft limit (SoftTimeLimitExceeded inside the run); 0 means time_limit - 30.
    soft_time_limit: int = 0
    # Seconds a batch service may spend before it stops starting work (scheduler.budget);
    # 0 means soft_time_limit - 15% (at least 5 s below it). Must lie below the soft limit.
    budget: int = 0
    starting_deadline: int = 300  # a slot may still start this many seconds after its moment
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # After downtime: "once" runs the newest missed slot once within the deadline, "skip" none.
    catch_up: str = "once"

    def __post_init__(self) -> None:
        problems = []
        if not JOB_NAME.match(self.name):
            problems.append(f"name {self.name!r} is not kebab-case")
        if not callable(self.service):
            problems.append(f"service {self.service!r} is not a callable (name the function)")
        if "." not in self.task:
            problems.append(f"task {self.task!r} is not an explicit dotted name like 'app.verb'")
        if len(self.cron.split()) != 5:
            problems.append(f"cron {self.cron!r} does not have 5 fields")
        if not is_offset(self.offset):
            problems.append(f"offset {self.offset} is outside {OFFSET_MIN}..{OFFSET_MAX}")
        if self.queue not in QUEUES:
            problems.append(f"queue {self.queue!r} is not one of {', '.join(QUEUES)}")
        if not 0 <= self.priority <= 9:
            problems.append(f"priority {self.priority} is outside 0..9")
        if self.lock_ttl < 10 or self.time_limit < 1 or self.starting_deadline < 1:
            problems.append("lock_ttl >= 10, time_limit >= 1, starting_deadline >= 1 are required")
        if not self.soft_time_limit:
            object.__setattr__(self, "soft_time_limit", max(1, self.time_limit - 30))
        if not self.budget:
            margin = max(5, self.soft_time_limit * 15 // 100)
            object.__setattr__(self, "budget", max(1, self.soft_time_limit - margin))
        if not 0 < self.budget < self.soft_time_limit < self.time_limit:
            problems.append(
                f"budget {self.budget} s < soft_time_limit {self.soft_time_limit} s < time_limit "
                f"{self.time_limit} s is required (a run must stop by itself before Celery "
                "interrupts it)"
            )
        if self.catch_up not in ("once", "skip"):
            problems.append(f"catch_up {self.catch_up!r} is not 'once' or 'skip'")
        if problems:
            raise RegistryError(f"job {self.name!r}: " + "; ".join(problems))

    @property
    def env_name(self) -> str:
        """`JOB_STAGGER_<JOB>`: the environment variable that overrides the offset."""
        return "JOB_STAGGER_" + self.name.upper().replace("-", "_")

    def run_service(self, *, now: datetime, budget: Budget | None = None) -> dict[str, Any]:
        """Call the service for the slot `now`; a batch service (one with a `budget` parameter)
        gets a fresh budget of `self.budget` seconds. Services that do a bounded amount of work
        (finalising one day's pools, one snapshot) take no budget."""
        if _takes_budget(self.service):
            return self.service(now=now, budget=budget or Budget(self.budget))
        return self.service(now=now)


@cache
def _takes_budget(service: Service) -> bool:
    return "budget" in inspect.signature(service).parameters


_jobs: dict[str, Job] = {}


def register(*jobs: Job) -> None:
    """Called by an app's `jobs.py` at import; a name or task used twice is an error."""
    for job in jobs:
        existing = _jobs.get(job.name)
        if existing is not None and existing != job:
            raise RegistryError(f"job {job.name!r} is registered twice with different settings")
        clash = next((j for j in _jobs.values() if j.task == job.task and j.name != job.name), None)
        if clash is not None:
            raise RegistryError(f"jobs {clash.name!r} and {job.name!r} share task {job.task!r}")
        _jobs[job.name] = job


def unregister(name: str) -> None:
    """Tests only: remove a job they registered."""
    _jobs.pop(name, None)


def discover() -> None:
    """Import every installed app's `jobs` module, then JOBSITE_JOB_MODULES (comma-separated
    dotted modules with more declarations, e.g. an operator's own jobs or a test suite's)."""
    autodiscover_modules("jobs")
    for module in settings.SCHEDULER.job_modules:
        import_module(module)


def all_jobs() -> list[Job]:
    return sorted(_jobs.values(), key=lambda job: (job.offset, job.name))


def get_job(name: str) -> Job:
    try:
        return _jobs[name]
    except KeyError:
        known = ", ".join(sorted(_jobs)) or "none"
        raise RegistryError(f"unknown job {name!r}; known jobs: {known}") from None


def find_job(name: str) -> Job | None:
    return _jobs.get(name)


def job_for_task(task_name: str) -> Job | None:
    return next((job for job in _jobs.values() if job.task == task_name), None)
