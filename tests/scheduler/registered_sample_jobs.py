"""Test jobs registered for the whole session: a worker learns its tasks when it starts, so jobs
it must run cannot be registered inside a test. Worker subprocesses import this module through
JOBSITE_JOB_MODULES."""

from scheduler.registry import register
from tests.scheduler.sample_jobs import job

register(
    job("sample-noop", "noop"),
    job("sample-slow", "slow"),
    job("sample-sleeper", "sleeper", lock_ttl=10),
)
