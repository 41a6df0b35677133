"""The chaos suite's jobs: real money services behind short lock TTLs, plus a few probes.

A worker learns its tasks when it starts, so worker subprocesses import `registered_jobs` through
JOBSITE_JOB_MODULES; the test process registers the same declarations for one test at a time
(`conftest.chaos_jobs`), so the rest of the suite never sees them. Offsets 3, 6, 7, 8, 9, 11 and 12
are free in the default table (multiples of 5) and in the scheduler's sample jobs (1, 2, 4).
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from typing import Any

from django.db import OperationalError, connection, transaction

from referrals.payouts import Payout, WalletPayout
from referrals.services.settlement import settlement_run
from scheduler.locks import current_lease, fence_check
from scheduler.registry import Job, RetryPolicy, Service

# A lock TTL of 10 s (the registry's minimum) lets a dead or frozen holder's lease expire within
# a test; retries after 1-2 s keep a database fault's retry inside it too.
_FAST_RETRY = RetryPolicy(retry_on=(OperationalError,), max_retries=2, backoff_base=1, jitter=0.0)


def _seconds(variable: str) -> float:
    return float(os.environ.get(variable, "0") or 0)


def settle(*, now: datetime) -> dict[str, Any]:
    """The real settlement, then (CHAOS_SLEEP_AFTER) a pause after its last COMMIT: a worker killed
    in that pause has paid but not recorded success nor acknowledged the message."""
    counts = settlement_run(now=now)
    time.sleep(_seconds("CHAOS_SLEEP_AFTER"))
    return counts


def settle_after_db_sleep(*, now: datetime) -> dict[str, Any]:
    """A transaction that sleeps in PostgreSQL first (a backend to terminate), then settles."""
    with transaction.atomic(), connection.cursor() as cursor:
        fence_check()
        cursor.execute("SELECT pg_sleep(%s)", [_seconds("CHAOS_DB_SLEEP")])
    return settlement_run(now=now)


def finalise_pools(*, now: datetime) -> dict[str, Any]:
    from games.services.pools import prize_pool_finalise_due

    return prize_pool_finalise_due(now=now)


def tick(*, now: datetime) -> dict[str, Any]:
    """A probe: sleeps CHAOS_SLEEP seconds (0 by default) and reports it."""
    seconds = _seconds("CHAOS_SLEEP")
    time.sleep(seconds)
    return {"slept_ms": int(seconds * 1000)}


class SlowWalletPayout(WalletPayout):
    """The wallet channel, CHAOS_PAY_DELAY seconds per payout: a batch stays open long enough to
    kill or freeze its worker inside it (REFERRAL_PAYOUT_CHANNEL=tests.chaos.jobs.SlowWalletPayout).
    """

    def pay(self, payout: Payout, *, now: datetime) -> str:
        time.sleep(_seconds("CHAOS_PAY_DELAY"))
        # The reference names the lease the payment was made under (tests attribute payments).
        lease = current_lease()
        return f"{super().pay(payout, now=now)}|token={lease.token if lease else 0}"


def _job(name: str, service: Service, offset: int, **overrides: Any) -> Job:
    fields: dict[str, Any] = {
        "name": name,
        "task": "chaos." + name.removeprefix("chaos-").replace("-", "_"),
        "service": service,
        "cron": "* * * * *",
        "offset": offset,
        "description": f"chaos suite: {service.__name__}",
        "lock_ttl": 10,
        "time_limit": 120,
        "starting_deadline": 600,
        "retry": _FAST_RETRY,
        **overrides,
    }
    return Job(**fields)


CHAOS_JOBS = (
    _job("chaos-settlement", settle, 3, queue="long"),
    _job("chaos-db-settlement", settle_after_db_sleep, 6, queue="long"),
    _job("chaos-finalise", finalise_pools, 7),
    _job("chaos-tick", tick, 8),
    _job("chaos-tock", tick, 9, starting_deadline=120),
    # A short starting deadline: a broker outage of two minutes leaves slots past it (fault 13).
    _job("chaos-blip", tick, 11, starting_deadline=60),
    _job("chaos-blop", tick, 12, starting_deadline=60),
)
