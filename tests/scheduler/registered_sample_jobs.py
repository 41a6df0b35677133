"""Test jobs registered for the whole session: a worker learns its tasks when it starts, so jobs
it must run cannot be registered inside a test. Worker subprocesses import this module through
JOBSITE_JOB_MODULES."""

from scheduler.registry import register
from tests.scheduler.sample_jobs import job, noop, sleeper, slow

register(
    # Offsets of their own (the default jobs use multiples of 5), so no collision is introduced.
    job("sample-noop", noop, offset=1),
    job("sample-slow", slow, offset=2),
    job("sample-sleeper", sleeper, offset=4, lock_ttl=10),
)
