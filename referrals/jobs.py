"""The referral jobs, as in DESIGN.md "Default jobs". Explicit task names: never renamed."""

from django.db import OperationalError

from referrals.services.rewards import referral_tier2_create, referral_tier3_create
from referrals.services.settlement import settlement_run
from scheduler.registry import Job, RetryPolicy, register

# Deadlocks and lost connections are transient; anything else is a bug to look at.
_TRANSIENT = RetryPolicy(retry_on=(OperationalError,))

# The tier jobs run every minute (offsets 0 and 15): a run stops starting batches after 30 s
# (~300k events at ~10k events per batch well under a second), Celery interrupts it at 40 s and
# kills it at 50 s, so it never reaches its next slot even when it starts late; what is left is
# its `backlog`, taken by the next minute's run.
_EVERY_MINUTE = {"budget": 30, "soft_time_limit": 40, "time_limit": 50}

register(
    Job(
        name="referral-tier2",
        task="referrals.tier2_create",
        service=referral_tier2_create,
        cron="* * * * *",
        offset=0,
        description="Create tier-2 referral rewards for finished paid sessions that lack them.",
        lock_ttl=120,
        **_EVERY_MINUTE,
        retry=_TRANSIENT,
    ),
    Job(
        name="referral-tier3",
        task="referrals.tier3_create",
        service=referral_tier3_create,
        cron="* * * * *",
        offset=15,
        description="Create tier-3 referral rewards for finished paid sessions that lack them.",
        lock_ttl=120,
        **_EVERY_MINUTE,
        retry=_TRANSIENT,
    ),
    Job(
        name="settlement",
        task="referrals.settlement_run",
        service=settlement_run,
        cron="*/10 * * * *",
        offset=40,
        queue="long",
        description="Pay pending referral rewards and prize credits into the ledger, in batches.",
        # Every 10 minutes: a run stops starting batches and payouts after 8 minutes (its budget,
        # the one limit of a run: it replaced REFERRAL_SETTLEMENT_MAX_SECONDS), is interrupted at
        # 9 and killed at 10, before its next slot. Cut anywhere, it is safe: settlements left
        # sending are resumed by the next run under the same keys.
        lock_ttl=300,
        budget=480,
        soft_time_limit=540,
        time_limit=600,
        retry=_TRANSIENT,
    ),
)
