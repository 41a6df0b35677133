"""Imported by worker and beat subprocesses through JOBSITE_JOB_MODULES (see `jobs`)."""

from scheduler.registry import register
from tests.chaos.jobs import CHAOS_JOBS

register(*CHAOS_JOBS)
