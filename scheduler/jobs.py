"""The scheduler's own job."""

from django.db import OperationalError

from scheduler.registry import Job, RetryPolicy, register
from scheduler.services.retention import retention_prune

register(
    Job(
        name="retention-pruning",
        task="scheduler.retention_prune",
        service=retention_prune,
        cron="0 4 * * *",
        offset=55,
        queue="long",
        description="Delete ledger rows and task results older than their retention age.",
        lock_ttl=120,
        # Deletes ~7-11k rows a second here (2 shared cores), so 300 s clears ~2M rows: a wedged
        # month catches up in one run. The default (30 min) would have the test profile, which
        # fires every minute, record ~30 skipped runs behind one long catch-up.
        time_limit=600,
        budget=300,
        retry=RetryPolicy(retry_on=(OperationalError,)),
    ),
)
