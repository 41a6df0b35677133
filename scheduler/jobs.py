"""The scheduler's own job."""

from django.db import OperationalError

from scheduler.registry import Job, RetryPolicy, register

register(
    Job(
        name="retention-pruning",
        task="scheduler.retention_prune",
        service="scheduler.services.retention.retention_prune",
        cron="0 4 * * *",
        offset=55,
        queue="long",
        description="Delete ledger rows and task results older than their retention age.",
        lock_ttl=120,
        retry=RetryPolicy(retry_on=(OperationalError,)),
    ),
)
