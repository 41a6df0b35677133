"""The referral jobs, as in DESIGN.md "Default jobs". Explicit task names: never renamed."""

from django.db import OperationalError

from scheduler.registry import Job, RetryPolicy, register

# Deadlocks and lost connections are transient; anything else is a bug to look at.
_TRANSIENT = RetryPolicy(retry_on=(OperationalError,))

register(
    Job(
        name="referral-tier2",
        task="referrals.tier2_create",
        service="referrals.services.rewards.referral_tier2_create",
        cron="* * * * *",
        offset=0,
        description="Create tier-2 referral rewards for finished paid sessions that lack them.",
        lock_ttl=120,
        retry=_TRANSIENT,
    ),
    Job(
        name="referral-tier3",
        task="referrals.tier3_create",
        service="referrals.services.rewards.referral_tier3_create",
        cron="* * * * *",
        offset=15,
        description="Create tier-3 referral rewards for finished paid sessions that lack them.",
        lock_ttl=120,
        retry=_TRANSIENT,
    ),
    Job(
        name="settlement",
        task="referrals.settlement_run",
        service="referrals.services.settlement.settlement_run",
        cron="*/10 * * * *",
        offset=40,
        queue="long",
        description="Pay pending referral rewards and prize credits into the ledger, in batches.",
        # A run stops starting batches after REFERRAL_SETTLEMENT_MAX_SECONDS (540 s by default).
        lock_ttl=300,
        time_limit=900,
        retry=_TRANSIENT,
    ),
)
