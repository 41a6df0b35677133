"""The scheduler's settings group, `settings.SCHEDULER`, parsed once by jobsite/settings.py from
the environment (a bad value stops the process naming its variable; docs/configuration.md).

The accessors below read `django.conf.settings` at each call, so the `settings` fixture and
`override_settings` apply at once; a process sees the environment as it was when it started.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

PROFILES = ("production", "test")

# Seconds to keep ledger rows and results, by status group, when RETENTION_* are not set.
DEFAULT_RETENTION_SECONDS = {
    "production": {"succeeded": 7 * 86400, "failed": 30 * 86400},
    "test": {"succeeded": 3600, "failed": 86400},
}


@dataclass(frozen=True)
class StaggerSettings:
    enabled: bool  # JOB_STAGGER_ENABLED; off means every countdown is 0
    # Every JOB_STAGGER_<JOB> variable set, by name: the offset `schedules apply` writes for that
    # job. Which jobs exist is known only once the apps are loaded, so the `scheduler.E001` system
    # check, not settings, refuses a name that matches no registered job.
    offsets: dict[str, int]


@dataclass(frozen=True)
class RetentionSettings:
    succeeded_seconds: int
    failed_seconds: int  # failed, lost, missed and expired runs, and FAILURE results


@dataclass(frozen=True)
class SchedulerSettings:
    profile: str  # JOBSITE_PROFILE: the schedule profile this deployment runs (`make run`: test)
    job_modules: tuple[str, ...]  # JOBSITE_JOB_MODULES: more modules with job declarations
    stagger: StaggerSettings
    # How long after its moment a slot may go without a ledger row before it counts as missed.
    reconcile_grace_seconds: int
    reconcile_lookback_seconds: int
    retention: RetentionSettings


def load() -> SchedulerSettings:
    return settings.SCHEDULER


# Read by beat at every send, from settings: switching it needs a beat restart.
def stagger_enabled() -> bool:
    return load().stagger.enabled


def reconcile_grace_seconds() -> int:
    return load().reconcile_grace_seconds


def reconcile_lookback_seconds() -> int:
    return load().reconcile_lookback_seconds


def profile() -> str:
    return load().profile
