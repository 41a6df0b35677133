"""Fault 7 at the service level: each money service, called under a lease that has expired, raises
LeaseLost and writes nothing (the process test in test_frozen_holder.py shows it end to end)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.utils import timezone

from referrals.models import Settlement, TierProgress
from referrals.services import referral_tier2_create, settlement_run
from scheduler.locks import Lease, LeaseLost, lease_acquire, lease_held
from scheduler.models import JobLease, JobRun
from tests.chaos.seed import SEEDED_AT, pending_items, seed_money

pytestmark = [pytest.mark.chaos]


@contextmanager
def expired_lease(job: str) -> Iterator[Lease]:
    """The current run's lease, already expired (as for a holder frozen past its TTL)."""
    run = JobRun.objects.create(
        job=job, slot=timezone.now(), status=JobRun.Status.RUNNING, started_at=timezone.now()
    )
    lease = lease_acquire(job=job, run_id=run.pk, ttl=30)
    assert lease is not None
    JobLease.objects.filter(job=job).update(expires_at=timezone.now() - timedelta(seconds=1))
    with lease_held(lease):
        yield lease
    JobRun.objects.filter(pk=run.pk).update(status=JobRun.Status.LOST, finished_at=timezone.now())


def _raises_lease_lost(call: Callable[[], object]) -> None:
    with pytest.raises(LeaseLost):
        call()


def test_settlement_under_an_expired_lease_pays_nothing(chaos_ledger):
    """7: settlement under an expired lease (service level)

    Expected: the service raises LeaseLost: no item paid, no settlement written.
    """
    items = seed_money(tag="fence", players=5, per_player=4, credits=3)
    with expired_lease("settlement"):
        _raises_lease_lost(lambda: settlement_run(now=SEEDED_AT))
    assert pending_items() == items
    assert not Settlement.objects.exists()


def test_tier_rewards_under_an_expired_lease_write_nothing(chaos_ledger):
    """7: tier-2 rewards under an expired lease (service level)

    Expected: the service raises LeaseLost: no tier progress written.
    """
    with expired_lease("referral-tier2"):
        _raises_lease_lost(lambda: referral_tier2_create(now=SEEDED_AT))
    assert not TierProgress.objects.exists()


def test_prize_pool_finalisation_under_an_expired_lease_credits_nothing(chaos_ledger):
    """7: prize-pool finalisation under an expired lease (service level)

    Expected: the service raises LeaseLost: the pool stays open, nothing credited.
    """
    from games.models import PrizePool
    from games.services.pools import prize_pool_finalise

    pool = PrizePool.objects.create(
        game="pong", period="daily", period_start=dt.date(2026, 3, 1), amount="5.00"
    )
    with expired_lease("prize-pool-finalisation"):
        _raises_lease_lost(lambda: prize_pool_finalise(pool_id=pool.pk, now=SEEDED_AT))
    pool.refresh_from_db()
    assert pool.status == PrizePool.Status.OPEN
