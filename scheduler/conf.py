"""Scheduler knobs from the environment; a bad value names its variable (docs/configuration.md)."""

from __future__ import annotations

from jobsite.env import ConfigError, env_bool, env_int, env_str

PROFILES = ("production", "test")


# Runtime kill switch read by beat: off means every countdown is 0.
def stagger_enabled() -> bool:
    return env_bool("JOB_STAGGER_ENABLED", True)


def reconcile_grace_seconds() -> int:
    """How long after its moment a slot may go without a ledger row before it counts as missed."""
    return env_int("JOB_RECONCILE_GRACE", 90, minimum=5, maximum=3600)


def reconcile_lookback_seconds() -> int:
    return env_int("JOB_RECONCILE_LOOKBACK", 24 * 3600, minimum=60, maximum=30 * 24 * 3600)


def profile() -> str:
    """JOBSITE_PROFILE: the schedule profile this deployment runs (`make run` sets test)."""
    value = env_str("JOBSITE_PROFILE", "production")
    if value not in PROFILES:
        raise ConfigError(f"JOBSITE_PROFILE={value!r} is not one of {', '.join(PROFILES)}")
    return value
